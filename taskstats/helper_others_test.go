//go:build !linux

package taskstats_test

func maybeRunHelper() {}
