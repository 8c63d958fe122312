package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

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

// outputFlags are the flags of the commands that follow a tree over time
// (run and watch): where the record of what happened goes.
type outputFlags struct {
	events       string
	trace        string
	metricsAddr  string
	pollInterval time.Duration
}

func (f *outputFlags) register(fs *pflag.FlagSet, stdoutEvents bool) {
	help := "write every event as one JSON object per line to `FILE`"
	if stdoutEvents {
		help += " (- = stdout)"
	}
	fs.StringVar(&f.events, "events", "", help)
	fs.StringVar(&f.trace, "trace", "", "write a Chrome trace (Perfetto, chrome://tracing) of the processes' lifetimes to `FILE`")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`HOST:PORT`/metrics (port 0 = any; the address is printed on stderr)")
	fs.DurationVar(&f.pollInterval, "poll-interval", 100*time.Millisecond, "how often to scan /proc in polling mode, and to check whether the tree is empty")
}

func (f *outputFlags) check() error {
	if f.pollInterval <= 0 {
		return usageError{fmt.Errorf("--poll-interval must be positive, got %v", f.pollInterval)}
	}
	return nil
}
