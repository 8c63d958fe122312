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
	// coalesceSet: --coalesce was given (else autoCoalesce applies
	// where it may); auto: the hub was given autoCoalesce, and attach
	// decides whether it stays.
	coalesceSet, auto bool
	flags             *pflag.FlagSet // where register put the flags
}

// autoCoalesce is pwatch's --coalesce when none is given, where the
// kernel tree filter records exec images (HubStats.ImagesReason empty):
// events are read in batches, up to 20 ms late. pwatch's files are
// written every 50 ms anyway, and a late read loses nothing there: the
// new child's start time and an exec's name and command line come from
// the filter's records, made when the kernel reported them. Without the
// records, a process that execs and exits within the wait would keep its
// parent's command line (TestSummaryReadable showed it), so pwatch then
// reads each event at once. With 20 ms, pwatch watch cost 1.48x
// forkstat's CPU per event in a fork storm against 2.78x at once
// (BENCHMARKS.md, the runs of 462701b and 3d54bf6).
const autoCoalesce = 20 * time.Millisecond

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
	fs.DurationVar(&f.coalesce, "coalesce", 0, "in connector mode, hold the kernel's events up to `DURATION` after each read, so that one wake-up reads many (the files are written every 50 ms anyway); 0 = read each event at once. Not given: 20ms where the kernel filter records each exec's command line (as root with BTF), else 0; with a wait and without those records, a process that execs and exits within the wait keeps its parent's command line")
	f.flags = fs
	fs.BoolVar(&f.usage, "usage", true, "record each exiting process's resource usage (CPU, peak RSS, I/O, context switches) from the kernel's taskstats, as root in the initial namespaces; pwatch run's own children fall back to wait4's. --usage=false opens no taskstats socket")
}

// apply sets what the output flags ask of the Watcher.
func (f *outputFlags) apply(cfg *watchman.Config) {
	cfg.KeepTombstones = true
	cfg.CaptureUsage = f.usage
	switch {
	case f.coalesce > 0:
		cfg.Hub = watchman.NewHub(&watchman.HubConfig{Coalesce: f.coalesce})
	case !f.coalesceSet:
		cfg.Hub = watchman.NewHub(&watchman.HubConfig{Coalesce: autoCoalesce})
		f.auto = true
	}
}

// attach attaches a Watcher to pid with cfg (as apply set it). When the
// hub was given autoCoalesce and has no exec images to keep late reads
// exact (keepAuto), it attaches again on a hub that reads each event at
// once and closes the first Watcher; if that fails, the first one stays.
func (f *outputFlags) attach(pid int, cfg *watchman.Config) (*watchman.Watcher, error) {
	w, err := watchman.Attach(pid, cfg)
	if err != nil || !f.auto || w.Mode() != watchman.ModeConnector {
		return w, err // in polling mode there is no hub, and nothing to hold back
	}
	if keepAuto(w.Mode(), w.Hub().Stats().ImagesReason) {
		return w, nil
	}
	cfg.Hub = watchman.NewHub(nil)
	w2, err := watchman.Attach(pid, cfg)
	if err != nil {
		return w, nil
	}
	w.Close()
	f.auto = false
	return w2, nil
}

// keepAuto says whether a hub may keep autoCoalesce: in connector mode
// only where its kernel filter records exec images (imagesReason empty);
// in polling mode coalescing does nothing.
func keepAuto(mode watchman.Mode, imagesReason string) bool {
	return mode != watchman.ModeConnector || imagesReason == ""
}

// coalescing is the wait the Watcher's hub holds events for after each
// read (0: none), once attach has decided.
func (f *outputFlags) coalescing() time.Duration {
	if f.auto {
		return autoCoalesce
	}
	return max(f.coalesce, 0)
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
	f.coalesceSet = f.flags == nil || f.flags.Changed("coalesce")
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
