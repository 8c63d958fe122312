//go:build !linux

package connector

func runReaderHelper(string) (int, bool) { return 0, false }
