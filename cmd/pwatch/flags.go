package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/process-watchman/watchman"
	"github.com/spf13/pflag"
)

// watchFlags are the flags every command shares: how to watch.
type watchFlags struct {
	strategy       string
	maxDepth       int
	maxDescendants int
	noCmdline      bool
	cmdlineMax     int
}

func (f *watchFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.strategy, "strategy", "auto", "how to learn of processes: auto, connector or poll")
	fs.IntVar(&f.maxDepth, "max-depth", 0, "deepest generation to track, root = 0 (0 = no limit)")
	fs.IntVar(&f.maxDescendants, "max-descendants", 0, "most descendants to track (0 = no limit)")
	fs.BoolVar(&f.noCmdline, "no-cmdline", false, "do not read command lines")
	fs.IntVar(&f.cmdlineMax, "cmdline-max", 0, "cut command lines to this many bytes (0 = 4096)")
}

func (f *watchFlags) config() *watchman.Config {
	return &watchman.Config{
		Strategy:        watchman.Strategy(f.strategy),
		MaxDepth:        f.maxDepth,
		MaxDescendants:  f.maxDescendants,
		CaptureCmdline:  !f.noCmdline,
		CmdlineMaxChars: f.cmdlineMax,
		IncludeRoot:     true,
	}
}

// parsePID reads a PID argument.
func parsePID(s string) (int, error) {
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, usageError{fmt.Errorf("invalid PID %q: want a positive number", s)}
	}
	return pid, nil
}

// attachError makes the errors a user can fix (no such PID, a bad flag
// value) usage errors.
func attachError(err error) error {
	if errors.Is(err, watchman.ErrInvalidPID) || errors.Is(err, watchman.ErrNoSuchProcess) ||
		errors.Is(err, watchman.ErrInvalidConfig) || errors.Is(err, watchman.ErrConnectorUnavailable) {
		return usageError{err}
	}
	return err
}
