//go:build !(linux && (amd64 || arm64))

// Command benchsuite measures process-watchman's performance claims; it
// runs on linux/amd64 and linux/arm64 only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "benchsuite: needs linux/amd64 or linux/arm64")
	os.Exit(2)
}
