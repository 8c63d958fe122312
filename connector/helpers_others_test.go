//go:build !linux

package connector_test

import "github.com/process-watchman/watchman/connector"

func runProcessHelper(string) (int, bool) { return 0, false }

func forkStartsHelper(*connector.Conn) {}
