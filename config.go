package watchman

import (
	"fmt"
	"time"
)

// Strategy chooses how a Watcher learns of processes.
type Strategy string

// The strategies.
const (
	// StrategyAuto (the zero value) uses the kernel's proc connector when
	// this process may, and polls /proc otherwise; the Watcher's Mode and
	// ModeReason say which and why.
	StrategyAuto Strategy = "auto"
	// StrategyConnector requires the proc connector: Attach fails with an
	// error matching ErrConnectorUnavailable where it cannot be had.
	StrategyConnector Strategy = "connector"
	// StrategyPoll scans /proc at every Poll (and every ReconcileInterval,
	// if set), like the Python library's scan_ppid strategy. Processes that
	// live between two scans are not seen.
	StrategyPoll Strategy = "poll"
)

// Defaults applied to zero Config fields.
const (
	// DefaultCmdlineMaxChars is the cap on a captured command line.
	DefaultCmdlineMaxChars = 4096
	// DefaultTombstoneLimit is how many tombstones a Watcher keeps.
	DefaultTombstoneLimit = 1000
	// DefaultReconcileInterval is the period of the safety-net reconcile in
	// connector mode.
	DefaultReconcileInterval = 2 * time.Second
)

// Config tunes a Watcher. A nil *Config, and the zero value of every field,
// mean the documented default. Negative numbers are rejected with a
// *ConfigError.
type Config struct {
	// MaxDepth is the deepest generation tracked, the root being 0 and its
	// children 1. Zero means no limit. Processes below the limit are not
	// members, and Snapshot.Truncated says so.
	MaxDepth int
	// IncludeRoot lists the root among Snapshot.Processes, LivePIDs and the
	// Delta. Zero (false) lists only descendants.
	IncludeRoot bool
	// MaxDescendants caps the number of members besides the root; zero means
	// no limit. Processes refused by the cap set Snapshot.Truncated; a later
	// scan adds them once there is room.
	MaxDescendants int
	// Strategy chooses connector or polling mode; the zero value is
	// StrategyAuto.
	Strategy Strategy
	// CaptureCmdline reads each member's command line when it joins (and,
	// in connector mode, when it execs). Zero (false) leaves
	// ProcessInfo.Cmdline nil and saves one /proc read per process. In
	// connector mode a read that takes longer than 50 ms (the kernel
	// reads the arguments from the process's memory, under its memory map
	// lock) is abandoned, so one stuck process cannot stall the hub: the
	// member keeps no command line (HubStats.SlowReads).
	CaptureCmdline bool
	// CmdlineMaxChars caps the bytes of a captured command line, arguments
	// and the spaces between them counted; the last argument kept is cut
	// and ProcessInfo.CmdlineTruncated set. Zero means
	// DefaultCmdlineMaxChars.
	CmdlineMaxChars int
	// CaptureUsage fills Exit.Usage of every member that exits (CPU,
	// peak memory, storage I/O, context switches, delays) from the
	// kernel's taskstats records, in connector mode where the hub can
	// listen to them (CAP_NET_ADMIN in the initial user and PID
	// namespaces). Where it cannot, Exit.Usage stays nil and ModeReason
	// and WatcherStats.UsageReason say why; a record that never comes
	// within UsageWait of the exit is counted in WatcherStats.UsageMissing.
	// Zero (false) opens no taskstats socket.
	CaptureUsage bool
	// KeepTombstones keeps the last state of removed members: in
	// Snapshot.Tombstones (those removed since the previous Poll) and in
	// Watcher.Tombstones (the last TombstoneLimit). Zero (false) keeps none.
	KeepTombstones bool
	// TombstoneLimit bounds Watcher.Tombstones; zero means
	// DefaultTombstoneLimit.
	TombstoneLimit int
	// ReconcileInterval is how often the tree is checked against /proc in
	// the background. In connector mode it is a safety net for events the
	// kernel dropped without saying so (overruns are repaired at once, not
	// on this clock); zero means DefaultReconcileInterval. In polling mode
	// zero means no background scans: the tree is scanned at Attach and at
	// every Poll. A negative value disables background checks in both.
	ReconcileInterval time.Duration
	// FullScanInterval, in polling mode, makes a Poll scan the whole host
	// instead of walking the tree when this long has passed since the last
	// full scan: a safety net that costs O(host). Zero means never (the
	// walk, which costs O(tree), finds what a host scan finds: see
	// README); a kernel without children files always scans the host.
	FullScanInterval time.Duration
	// ProcRoot is the mount point of the proc filesystem; zero ("") means
	// /proc. Tests point it at a fake tree: without a Hub that means
	// polling mode; with one, it must be the Hub's ProcRoot.
	ProcRoot string
	// Hub is the connector socket shared with other Watchers; zero (nil)
	// gives the Watcher a private one. Share a Hub when one process
	// watches many trees: N watchers then cost one socket and one decode
	// per event.
	Hub *Hub
}

// normalize checks the config and fills in defaults.
func (c *Config) normalize() (Config, error) {
	var n Config
	if c != nil {
		n = *c
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxDepth", n.MaxDepth},
		{"MaxDescendants", n.MaxDescendants},
		{"CmdlineMaxChars", n.CmdlineMaxChars},
		{"TombstoneLimit", n.TombstoneLimit},
		{"FullScanInterval", int(n.FullScanInterval)},
	} {
		if f.v < 0 {
			return n, &ConfigError{Field: f.name, Reason: fmt.Sprintf("%d is negative", f.v)}
		}
	}
	if iv := n.ReconcileInterval; iv > 0 && iv < minInterval {
		return n, &ConfigError{Field: "ReconcileInterval", Reason: fmt.Sprintf("%v is below the floor of %v (negative disables it)", iv, minInterval)}
	}
	switch n.Strategy {
	case "":
		n.Strategy = StrategyAuto
	case StrategyAuto, StrategyConnector, StrategyPoll:
	default:
		return n, &ConfigError{Field: "Strategy", Reason: fmt.Sprintf("unknown strategy %q (want auto, connector or poll)", n.Strategy)}
	}
	if n.CmdlineMaxChars == 0 {
		n.CmdlineMaxChars = DefaultCmdlineMaxChars
	}
	if n.TombstoneLimit == 0 {
		n.TombstoneLimit = DefaultTombstoneLimit
	}
	return n, nil
}
