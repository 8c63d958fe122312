package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
// (run and watch): where the record of what happened goes, and how the
// summary lists it.
type outputFlags struct {
	events       string
	trace        string
	metricsAddr  string
	pollInterval time.Duration
	listMax      int
	// usage is --usage: fill every exit's resource usage (on by default).
	usage bool
	// coalesce is --coalesce: HubConfig.Coalesce of the watcher's hub.
	coalesce time.Duration
}

// defaultCoalesce is pwatch's --coalesce: none. With 20 ms, pwatch
// watch cost 1.48x forkstat's CPU per event in a fork storm against 2-4x
// (BENCHMARKS.md, the run of 462701b), but an event read 20 ms late finds
// a short-lived child gone: its command line can no longer be read
// (TestSummaryReadable's failures showed their parent's), and pwatch
// promises command lines by default. So pwatch reads each event at once
// unless asked.
const defaultCoalesce = 0

func (f *outputFlags) register(fs *pflag.FlagSet, stdoutEvents bool) {
	help := "write every event as one JSON object per line to `FILE`"
	if stdoutEvents {
		help += " (- = stdout)"
	}
	fs.StringVar(&f.events, "events", "", help)
	fs.StringVar(&f.trace, "trace", "", "write a Chrome trace (Perfetto, chrome://tracing) of the processes' lifetimes to `FILE`")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`HOST:PORT`/metrics (port 0 = any; the address is printed on stderr)")
	fs.DurationVar(&f.pollInterval, "poll-interval", 100*time.Millisecond, "how often to scan /proc in polling mode, and to check whether the tree is empty")
	fs.IntVar(&f.listMax, "list-max", 10, "list at most `N` processes in each list of the summary (failed, left behind); 0 = all")
	fs.DurationVar(&f.coalesce, "coalesce", defaultCoalesce, "in connector mode, hold the kernel's events up to `DURATION` after each read, so that one wake-up reads many (the output is buffered up to 100 ms anyway; a process that execs and exits within it loses its command line); 0 = read each event at once")
	fs.BoolVar(&f.usage, "usage", true, "record each exiting process's resource usage (CPU, peak RSS, I/O, context switches) from the kernel's taskstats, as root in the initial namespaces; pwatch run's own children fall back to wait4's. --usage=false opens no taskstats socket")
}

// apply sets what the output flags ask of the Watcher.
func (f *outputFlags) apply(cfg *watchman.Config) {
	cfg.KeepTombstones = true
	cfg.CaptureUsage = f.usage
	if f.coalesce > 0 {
		cfg.Hub = watchman.NewHub(&watchman.HubConfig{Coalesce: f.coalesce})
	}
}

// check validates the flags, and the output paths, before anything is
// created: a mistake must not truncate a file.
func (f *outputFlags) check() error {
	if f.pollInterval <= 0 {
		return usageError{fmt.Errorf("--poll-interval must be positive, got %v", f.pollInterval)}
	}
	if f.coalesce < 0 {
		return usageError{fmt.Errorf("--coalesce must not be negative, got %v", f.coalesce)}
	}
	if f.listMax < 0 {
		return usageError{fmt.Errorf("--list-max must not be negative, got %d", f.listMax)}
	}
	var paths []string
	for _, o := range []struct{ flag, path string }{{"--events", f.events}, {"--trace", f.trace}} {
		if o.path == "" || o.path == "-" {
			continue
		}
		if err := checkWritable(o.path); err != nil {
			return usageError{fmt.Errorf("%s: %w", o.flag, err)}
		}
		paths = append(paths, o.path)
	}
	if len(paths) == 2 && samePath(paths[0], paths[1]) {
		return usageError{fmt.Errorf("--events and --trace name the same file %q: give each its own", f.trace)}
	}
	if f.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(f.metricsAddr); err != nil {
			return usageError{fmt.Errorf("--metrics-addr: %w", err)}
		}
	}
	return nil
}

// checkWritable says why path could not be created or written, without
// touching it.
func checkWritable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return &os.PathError{Op: "open", Path: path, Err: syscall.EISDIR}
	case err == nil:
		if err := unix.Access(path, unix.W_OK); err != nil {
			return &os.PathError{Op: "open", Path: path, Err: err}
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: unwrapPathErr(err)}
	}
	if !di.IsDir() {
		return &os.PathError{Op: "open", Path: path, Err: syscall.ENOTDIR}
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	return nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// samePath says whether a and b name one file: the same path once made
// absolute, or the same existing file (links).
func samePath(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	if err1 == nil && err2 == nil && aa == bb {
		return true
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}
