package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newTreeCmd(a *app) *cobra.Command {
	var wf watchFlags
	var asJSON bool
	width := -1
	cmd := &cobra.Command{
		Use:   "tree [flags] PID",
		Short: "Print the live process tree under PID once",
		Long: `tree prints the live tree rooted at PID, pstree-style: each process with its
PID, state and command line. Processes whose parent exited stay in the tree
(membership is fork lineage) and are marked as orphans.`,
		Example: `  pwatch tree $$
  pwatch tree --json 1234 | jq '.processes[].pid'
  pwatch tree --max-depth 2 --width 0 1`,
		Args: exactArgs(1, "PID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			a.begin()
			cfg := wf.config()
			// A tree needs one scan, not the event stream.
			if cfg.Strategy == watchman.StrategyAuto {
				cfg.Strategy = watchman.StrategyPoll
			}
			cfg.ReconcileInterval = -1
			w, err := watchman.Attach(pid, cfg)
			if err != nil {
				return attachError(err)
			}
			defer w.Close()
			snap, err := w.Poll()
			if err != nil {
				return err
			}
			if asJSON {
				return writeTreeJSON(a.stdout, &snap)
			}
			if width < 0 {
				width = terminalWidth(a.stdout)
			}
			writeTree(a.stdout, &snap, width)
			return nil
		},
	}
	wf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object instead of the tree")
	cmd.Flags().IntVar(&width, "width", -1, "cut lines to this many columns (0 = never; default: the terminal's width, or never when not a terminal)")
	return cmd
}

// exactArgs is cobra.ExactArgs with a message that names the argument.
func exactArgs(n int, name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s needs %d argument (%s), got %d; see '%s --help'", cmd.Name(), n, name, len(args), cmd.CommandPath())}
		}
		return nil
	}
}

// terminalWidth is the width of w if it is a terminal, else 0 (no cut).
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 0
	}
	return int(ws.Col)
}

// treeJSON is the --json document of pwatch tree.
type treeJSON struct {
	Time      time.Time              `json:"time"`
	Root      watchman.Identity      `json:"root"`
	RootAlive bool                   `json:"root_alive"`
	Mode      watchman.Mode          `json:"mode"`
	Truncated bool                   `json:"truncated"`
	Processes []watchman.ProcessInfo `json:"processes"`
}

func writeTreeJSON(w io.Writer, s *watchman.Snapshot) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(treeJSON{
		Time: s.Time, Root: s.Root, RootAlive: s.RootAlive, Mode: s.Mode,
		Truncated: s.Truncated, Processes: s.Processes,
	})
}

// writeTree prints the snapshot as a tree. Members hang under the member
// that forked them; one whose parent has exited hangs under the root, marked
// as an orphan. width > 0 cuts lines to that many columns.
func writeTree(w io.Writer, s *watchman.Snapshot, width int) {
	byPID := make(map[int]*watchman.ProcessInfo, len(s.Processes))
	for i := range s.Processes {
		byPID[s.Processes[i].PID] = &s.Processes[i]
	}
	children := make(map[int][]*watchman.ProcessInfo)
	var tops []*watchman.ProcessInfo
	for i := range s.Processes {
		p := &s.Processes[i]
		switch {
		case p.Identity == s.Root:
			tops = append([]*watchman.ProcessInfo{p}, tops...)
		case byPID[p.Parent] != nil:
			children[p.Parent] = append(children[p.Parent], p)
		default:
			// The parent exited: hang it under the root, or at the top
			// if the root is gone too.
			if s.RootAlive && byPID[s.Root.PID] != nil {
				children[s.Root.PID] = append(children[s.Root.PID], p)
			} else {
				tops = append(tops, p)
			}
		}
	}
	if !s.RootAlive {
		fmt.Fprintf(w, "root %d has exited; %d descendants live on\n", s.Root.PID, len(s.Processes))
	}
	var walk func(p *watchman.ProcessInfo, prefix, branch string)
	walk = func(p *watchman.ProcessInfo, prefix, branch string) {
		line := prefix + branch + describe(p, s.Root)
		fmt.Fprintln(w, cut(line, width))
		kids := children[p.PID]
		next := prefix
		switch branch {
		case "├─ ":
			next += "│  "
		case "└─ ":
			next += "   "
		}
		for i, k := range kids {
			b := "├─ "
			if i == len(kids)-1 {
				b = "└─ "
			}
			walk(k, next, b)
		}
	}
	for _, p := range tops {
		walk(p, "", "")
	}
	if s.Truncated {
		fmt.Fprintln(w, "(truncated: --max-depth or --max-descendants left processes out)")
	}
}

// describe is one process's line: name, PID, state, orphan mark, command line.
func describe(p *watchman.ProcessInfo, root watchman.Identity) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s(%d) %s", p.Name, p.PID, p.State)
	if p.Identity != root && p.PPID != p.Parent {
		fmt.Fprintf(&b, " [orphan of %d]", p.Parent)
	}
	if len(p.Cmdline) > 0 {
		b.WriteString("  ")
		b.WriteString(strings.Join(p.Cmdline, " "))
		if p.CmdlineTruncated {
			b.WriteString("…")
		}
	}
	return escape(b.String())
}
