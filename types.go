package watchman

import (
	"time"

	"github.com/process-watchman/watchman/reconcile"
)

// Identity names one process for its whole life: its PID and its start time
// in clock ticks since boot (field 22 of /proc/PID/stat). A PID that the
// kernel hands to a later process gives another Identity, so identities are
// safe against PID reuse.
type Identity struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"`
}

// CreateTime returns when the process started: the boot time plus
// StartTicks/USER_HZ, so to 10 ms. The boot time comes from the wall clock
// and CLOCK_BOOTTIME at each call (two calls can differ by a microsecond);
// ProcessInfo.Started holds the value its Watcher computed.
func (id Identity) CreateTime() time.Time {
	return reconcile.BootTime().Add(time.Duration(id.StartTicks) * (time.Second / reconcile.UserHZ))
}

// Mode says how a Watcher learns of processes.
type Mode string

// The modes.
const (
	// ModePoll: /proc is scanned; processes that live between two scans
	// are not seen.
	ModePoll Mode = "poll"
	// ModeConnector: the kernel reports every fork, exec and exit as it
	// happens through the proc connector; /proc is read to repair.
	ModeConnector Mode = "connector"
)

// ProcessInfo describes one live member of the tree.
type ProcessInfo struct {
	Identity
	// PPID is the parent PID as last observed. After the parent exits it
	// is the process that adopted it (init or a subreaper), but the process
	// stays a member: membership is fork lineage.
	PPID int `json:"ppid"`
	// Parent is the member that forked the process, as first observed (0
	// for the root). Unlike PPID it stays when the process is reparented,
	// so it places orphans in the tree they came from.
	Parent int `json:"parent"`
	// Name is the command name (comm, at most 15 bytes for user processes).
	Name string `json:"name"`
	// NameFromUsage says Name comes from the kernel's accounting at the
	// exit (Usage.Command): the name the process took at its last exec
	// was lost, because it exited before /proc could be read.
	NameFromUsage bool `json:"name_from_usage,omitempty"`
	// Cmdline is the command line, when Config.CaptureCmdline is set.
	Cmdline []string `json:"cmdline,omitempty"`
	// CmdlineTruncated says Cmdline was cut at Config.CmdlineMaxChars.
	CmdlineTruncated bool `json:"cmdline_truncated,omitempty"`
	// State is the /proc state letter as last observed: R running, S
	// sleeping, D disk sleep, T stopped, t traced, I idle.
	State string `json:"state"`
	// Depth counts generations from the root: the root is 0, its children 1.
	Depth int `json:"depth"`
	// Started is the start time, from StartTicks and the boot time.
	Started time.Time `json:"started"`
	// ApproxStart says StartTicks was derived from the kernel's fork
	// timestamp because the process was gone before /proc could be read;
	// it may be a tick (10 ms) off.
	ApproxStart bool `json:"approx_start,omitempty"`
}

// Delta lists what changed since the previous Poll. Applying Added and then
// Removed to the previous live set gives the current one; a process that was
// born and died between two Polls is in both.
type Delta struct {
	Added   []Identity
	Removed []Identity
	// Exited lists the end of every removed member, and of the root, with
	// the exit status when the kernel reported it.
	Exited []Exit
}

// AddedPIDs returns the PIDs of Added, in order.
func (d Delta) AddedPIDs() []int { return pids(d.Added) }

// RemovedPIDs returns the PIDs of Removed, in order.
func (d Delta) RemovedPIDs() []int { return pids(d.Removed) }

// Empty reports whether nothing changed.
func (d Delta) Empty() bool { return len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Exited) == 0 }

func pids(ids []Identity) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = id.PID
	}
	return out
}

// Exit describes how a process ended.
type Exit struct {
	Identity
	// StatusKnown is true when the kernel reported the exit (connector
	// mode). In polling mode the process just vanished: Code is -1 and
	// Signal 0.
	StatusKnown bool
	// Code is the exit code (0-255) of a normal exit, else -1.
	Code int
	// Signal is the number of the signal that killed the process, else 0.
	Signal int
	// CoreDumped says the killing signal dumped core.
	CoreDumped bool
	// Time is when the process exited (connector mode) or was first seen
	// gone (polling mode).
	Time time.Time
	// Lifetime is Time minus the start time.
	Lifetime time.Duration
	// Usage is what the process used over its whole life, all its threads
	// included, with Config.CaptureUsage; nil when it is not known (see
	// Usage and WatcherStats.UsageMissing).
	Usage *Usage
}

// The sources of a Usage.
const (
	// UsageTaskstats: the kernel's per-task accounting at exit (generic
	// netlink family TASKSTATS), for every member, however briefly it
	// lived. Needs CAP_NET_ADMIN in the initial user namespace.
	UsageTaskstats = "taskstats"
	// UsageWait4: the rusage that wait4(2) returned for a direct child of
	// this process (pwatch run's command); it has no I/O bytes, no delays
	// and no wall time of its own.
	UsageWait4 = "wait4"
)

// Usage is the resource usage of one whole process, from its start to the
// exit of its last thread, as the kernel accounted it.
type Usage struct {
	// UserCPU and SystemCPU are the CPU times of all its threads: their
	// sum is the scheduler's exact run time, split in the proportion of
	// the kernel's tick samples, as getrusage(2) reports it (taskstats'
	// own user and system times are tick samples, which under load can be
	// far from what the threads ran).
	UserCPU   time.Duration `json:"user_cpu_ns"`
	SystemCPU time.Duration `json:"system_cpu_ns"`
	// Wall is its lifetime as the kernel measured it (0 from wait4).
	Wall time.Duration `json:"wall_ns"`
	// PeakRSS is the high-water mark of its resident set, in bytes.
	PeakRSS uint64 `json:"peak_rss_bytes"`
	// ReadBytes and WriteBytes are the bytes it made the storage layer
	// read and write (page cache hits are not reads; 0 from wait4).
	ReadBytes  uint64 `json:"read_bytes"`
	WriteBytes uint64 `json:"write_bytes"`
	// VoluntarySwitches and InvoluntarySwitches count its context
	// switches: waits it chose (I/O, sleep) and preemptions.
	VoluntarySwitches   uint64 `json:"voluntary_switches"`
	InvoluntarySwitches uint64 `json:"involuntary_switches"`
	// CPUDelay, BlkioDelay and SwapinDelay are the times it waited for a
	// CPU, for block I/O and for swap-in. The last two stay 0 unless the
	// kernel's delay accounting is on (sysctl kernel.task_delayacct or
	// the delayacct boot option); CPUDelay is always counted.
	CPUDelay    time.Duration `json:"cpu_delay_ns"`
	BlkioDelay  time.Duration `json:"blkio_delay_ns"`
	SwapinDelay time.Duration `json:"swapin_delay_ns"`
	// Threads is the number of threads accounted (1 for a process that
	// never had a second one; 0 from wait4, which does not say).
	Threads int `json:"threads,omitempty"`
	// Command is the command name the kernel accounted at the exit
	// (taskstats' ac_comm, at most 15 bytes; empty from wait4). When the
	// name a process took at its last exec was lost (it exited before
	// /proc could be read), ProcessInfo.Name and Event.Name are filled
	// from it, with NameFromUsage set; the command line stays empty.
	Command string `json:"command,omitempty"`
	// Source is UsageTaskstats or UsageWait4.
	Source string `json:"source"`
}

// Tombstone is the last state of a removed member.
type Tombstone struct {
	ProcessInfo
	// Removed is when the process left the tree.
	Removed time.Time
	// Exit is how it ended.
	Exit Exit
}

// Snapshot is one observation of the tree, returned by Poll.
type Snapshot struct {
	// Time is when the observation was made.
	Time time.Time
	// Root is the root's identity.
	Root Identity
	// RootAlive is false once the root exited or became a zombie, or its
	// PID was reused by another process (which is never adopted).
	RootAlive bool
	// Processes lists the live members, sorted by PID (the root among them
	// only with Config.IncludeRoot).
	Processes []ProcessInfo
	// Delta is what changed since the previous Poll (since Attach for the
	// first).
	Delta Delta
	// Tombstones holds the last state of the members removed since the
	// previous Poll, with Config.KeepTombstones.
	Tombstones []Tombstone
	// Truncated says MaxDepth or MaxDescendants kept processes out: in the
	// last scan, or at a fork since the previous Poll.
	Truncated bool
	// Mode says how the observation was made.
	Mode Mode
	// Overruns counts the times since the previous Poll that the kernel
	// dropped events because the socket's buffer was full (connector mode).
	Overruns int
	// Repairs counts the corrections reconcile passes made since the
	// previous Poll (connector mode): members found that no event announced,
	// members gone without an exit event.
	Repairs int
	// Compacted counts the processes born and gone since the previous Poll
	// that were dropped from the Delta (and their exits and tombstones)
	// because more than MaxPendingChanges changes piled up without a Poll.
	// The live set still follows from the Delta.
	Compacted int
	// Unreadable counts the members whose /proc entry the last check
	// could not read (a transient EMFILE, hidepid...): they are kept, not
	// taken for gone (WatcherStats.Unreadable).
	Unreadable int
}

// PIDs returns the PIDs of Processes, in order.
func (s *Snapshot) PIDs() []int {
	out := make([]int, len(s.Processes))
	for i := range s.Processes {
		out[i] = s.Processes[i].PID
	}
	return out
}
