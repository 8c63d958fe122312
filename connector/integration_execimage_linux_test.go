//go:build linux

package connector_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/process-watchman/watchman/connector"
)

// execArgvEnv carries the argv (JSON) that the "exec" helper execs; its
// first element's path is execPathEnv.
const (
	execArgvEnv = "CONNECTOR_TEST_EXEC_ARGV"
	execPathEnv = "CONNECTOR_TEST_EXEC_PATH"
	execMany    = 100
)

// runExecHelper runs the process shapes of the exec image tests in a
// re-executed test binary; ok is false for other modes.
func runExecHelper(mode string) (int, bool) {
	switch mode {
	case "exec":
		// Exec the given program as soon as the test says go.
		var argv []string
		if err := json.Unmarshal([]byte(os.Getenv(execArgvEnv)), &argv); err != nil {
			fmt.Println("error:", err)
			return 1, true
		}
		waitGo()
		err := syscall.Exec(os.Getenv(execPathEnv), argv, os.Environ())
		fmt.Println("error:", err)
		return 1, true
	case "execprog":
		// Run the tree program on this process's exec (see init).
		n, err := strconv.Atoi(os.Getenv(execPathEnv))
		if err == nil {
			err = connector.RunExecProgram(n)
		}
		if err != nil {
			fmt.Println("error:", err)
			return 1, true
		}
		return 0, true
	case "execimages":
		// Say whether the filter records exec images (run without
		// CAP_PERFMON by the test).
		c, err := connector.Dial(nil)
		if err != nil {
			fmt.Printf("execimages dial: %v\n", err)
			return 1, true
		}
		defer c.Close()
		f, err := c.AttachTreeFilter(16)
		if err != nil {
			fmt.Printf("execimages attached=false: %v\n", err)
			return 0, true
		}
		ok, why := f.ExecImages()
		fmt.Printf("execimages attached=true ok=%v reason=%q\n", ok, why)
		_ = f.Close()
		return 0, true
	case "execmany":
		// Run execMany children, one after the other, each exec'ing
		// /bin/true with manyArgv(i); print their pids.
		waitGo()
		var pids []string
		for i := range execMany {
			argv := manyArgv(i)
			cmd := exec.Command("/bin/true", argv[1:]...)
			if err := cmd.Run(); err != nil {
				fmt.Println("error:", err)
				return 1, true
			}
			pids = append(pids, strconv.Itoa(cmd.Process.Pid))
		}
		fmt.Println(strings.Join(pids, " "))
		return 0, true
	}
	return 0, false
}

func init() {
	if os.Getenv(helperEnv) == "execprog" {
		// The main goroutine stays on the main thread, whose pid is the
		// process's: the recorder takes only such a current.
		runtime.LockOSThread()
	}
}

// manyArgv is the argv of the execmany helper's child i: arguments of
// lengths that vary with i, one of them empty.
func manyArgv(i int) []string {
	return []string{"/bin/true", fmt.Sprintf("run-%d", i), strings.Repeat(string(rune('a'+i%26)), i*7), "", "end"}
}

// cmdline is /proc/PID/cmdline's form of argv.
func cmdline(argv []string) []byte {
	return []byte(strings.Join(argv, "\x00") + "\x00")
}

// attachExecTree attaches a tree filter that records exec images, or
// skips where the kernel has no BTF to find the offsets with.
func attachExecTree(t *testing.T) (*connector.Conn, *connector.TreeFilter) {
	t.Helper()
	requirePrivileged(t)
	c, f := attachTree(t, 4096)
	if ok, why := f.ExecImages(); !ok {
		if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
			t.Skipf("skipping: the filter records no exec images here (%s)", why)
		}
		t.Fatalf("ExecImages = false (%s) on a kernel with BTF, as root", why)
	}
	return c, f
}

// execOf waits for the exec event of process pid and then for its exit
// (an exec from another thread than the leader is preceded by an exit
// event of the leader's), reaps g and checks that /proc/PID is gone.
func execOf(t *testing.T, c *connector.Conn, g *gated) connector.Event {
	t.Helper()
	var execEv connector.Event
	collectUntil(t, c, func(evs []connector.Event) bool {
		for _, ev := range evs {
			switch {
			case ev.What == connector.WhatExec && ev.TGID == int32(g.pid):
				execEv = ev
			case ev.What == connector.WhatExit && ev.PID == int32(g.pid) && execEv.What == connector.WhatExec:
				return true
			}
		}
		return false
	})
	if err := g.cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("waiting for %d: %v", g.pid, err)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", g.pid)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("/proc/%d after the process was reaped: %v", g.pid, err)
	}
	return execEv
}

// TestIntegrationExecImages: members exec programs with short, long,
// over-long and empty arguments and exit at once; for each exec event
// ExecImage gives the comm and the argv the test passed to exec, though
// /proc/PID is gone when it looks.
func TestIntegrationExecImages(t *testing.T) {
	c, f := attachExecTree(t)
	long := []string{"sh", "-c", "exit 0", "sh"}
	for i := range 300 {
		long = append(long, fmt.Sprintf("arg-%03d", i))
	}
	over := []string{"true", strings.Repeat("a", 5000), strings.Repeat("b", 3000)}
	// A script: the kernel execs its interpreter with the script's path
	// in place of argv[0]; comm is the script's name.
	script := filepath.Join(t.TempDir(), "a-script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, comm string
		argv             []string
		want             []string // the command line, when not argv
	}{
		{"script", script, "a-script", []string{"ignored", "arg"}, []string{"/bin/sh", script, "arg"}},
		{"sh -c, short", "/bin/sh", "sh", []string{"sh", "-c", "exit 0", "short"}, nil},
		{"sh -c, long", "/bin/sh", "sh", long, nil},
		{"true, exits at once", "/bin/true", "true", []string{"/bin/true", "x"}, nil},
		{"empty arguments", "/bin/true", "true", []string{"", "", "mid", ""}, nil},
		{"longer than ExecImageArgsMax", "/bin/true", "true", over, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arg, err := json.Marshal(tc.argv)
			if err != nil {
				t.Fatal(err)
			}
			cmd := helperCmd("exec")
			cmd.Env = append(cmd.Env, execArgvEnv+"="+string(arg), execPathEnv+"="+tc.path)
			g := startGated(t, cmd)
			mustAdd(t, f, g.pid)
			if _, err := g.stdin.Write([]byte("go\n")); err != nil {
				t.Fatal(err)
			}
			ev := execOf(t, c, g)
			want := cmdline(tc.argv)
			if tc.want != nil {
				want = cmdline(tc.want)
			}
			comm, args, full, ok := f.ExecImage(g.pid, ev.Timestamp, nil)
			if !ok {
				t.Fatalf("ExecImage(%d, %d) missed", g.pid, ev.Timestamp)
			}
			if comm != tc.comm {
				t.Errorf("comm %q, want %q", comm, tc.comm)
			}
			if full != len(want) {
				t.Errorf("full length %d, want %d", full, len(want))
			}
			if n := min(len(want), connector.ExecImageArgsMax); string(args) != string(want[:n]) {
				t.Errorf("args %q (%d bytes), want the first %d bytes of %q", args, len(args), n, want)
			}
			// Another timestamp or TGID is not this record.
			for _, miss := range []struct {
				tgid int
				ts   uint64
			}{{g.pid, ev.Timestamp + 1}, {g.pid, ev.Timestamp - 1}, {g.pid + connector.ExecSlots, ev.Timestamp}} {
				if _, _, _, ok := f.ExecImage(miss.tgid, miss.ts, nil); ok {
					t.Errorf("ExecImage(%d, %d) hit; the record is (%d, %d)", miss.tgid, miss.ts, g.pid, ev.Timestamp)
				}
			}
		})
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, why := f.ExecImages(); ok || why == "" {
		t.Errorf("ExecImages after Close = %v, %q", ok, why)
	}
}

// TestIntegrationExecImageThread: a member execs from a thread other than
// its leader; the event carries the TGID as pid and tgid, and the record
// is the exec'd program's.
func TestIntegrationExecImageThread(t *testing.T) {
	c, f := attachExecTree(t)
	g := startGated(t, helperCmd("threadexec"))
	mustAdd(t, f, g.pid)
	if _, err := g.stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	ev := execOf(t, c, g)
	if ev.PID != ev.TGID {
		t.Errorf("exec event pid %d, tgid %d", ev.PID, ev.TGID)
	}
	comm, args, full, ok := f.ExecImage(g.pid, ev.Timestamp, make([]byte, 0, 64))
	want := cmdline([]string{"sh", "-c", "exit 4"})
	if !ok || comm != "sh" || string(args) != string(want) || full != len(want) {
		t.Errorf("ExecImage = %q, %q, %d, %v; want sh, %q, %d, true", comm, args, full, ok, want, len(want))
	}
}

// TestIntegrationExecImageMany: a member runs 100 children that exec
// /bin/true one after the other. Every exec is recorded as exec'd, unless
// a later child's TGID took its slot (equal modulo 512: PIDs go fast on a
// busy host), and then it says it has no record.
func TestIntegrationExecImageMany(t *testing.T) {
	c, f := attachExecTree(t)
	g := startGated(t, helperCmd("execmany"))
	mustAdd(t, f, g.pid)
	pids := g.release(t)
	if len(pids) != execMany {
		t.Fatalf("%d pids, want %d", len(pids), execMany)
	}
	index := map[int32]int{}
	for i, p := range pids {
		index[int32(p)] = i
	}
	execs := map[int]connector.Event{}
	exits := 0
	collectUntil(t, c, func(evs []connector.Event) bool {
		exits = 0
		for _, ev := range evs {
			i, ours := index[ev.TGID]
			switch {
			case !ours:
			case ev.What == connector.WhatExec:
				execs[i] = ev
			case ev.What == connector.WhatExit:
				exits++
			}
		}
		return exits == execMany
	})
	hits, lost := 0, 0
	for i, p := range pids {
		ev, ok := execs[i]
		if !ok {
			t.Errorf("child %d (%d): no exec event", i, p)
			continue
		}
		taken := false
		for _, q := range pids[i+1:] {
			taken = taken || q%connector.ExecSlots == p%connector.ExecSlots
		}
		comm, args, full, ok := f.ExecImage(p, ev.Timestamp, nil)
		want := cmdline(manyArgv(i))
		switch {
		case taken && ok:
			t.Errorf("child %d (%d): ExecImage hit, though a later child took its slot", i, p)
		case taken:
			lost++
		case !ok:
			t.Errorf("child %d (%d): ExecImage missed", i, p)
		case comm != "true" || string(args) != string(want) || full != len(want):
			t.Errorf("child %d (%d): ExecImage = %q, %q, %d; want true, %q, %d", i, p, comm, args, full, want, len(want))
		default:
			hits++
		}
	}
	t.Logf("%d of %d execs recorded as exec'd, %d slots taken by a later child", hits, execMany, lost)
}

// TestIntegrationExecImageStranger: a process outside the tree execs; the
// program records nothing of it, while it records a member's exec.
func TestIntegrationExecImageStranger(t *testing.T) {
	c, f := attachExecTree(t)
	stranger := run(t, "/bin/true", "stranger")
	arg, _ := json.Marshal([]string{"true", "member"})
	cmd := helperCmd("exec")
	cmd.Env = append(cmd.Env, execArgvEnv+"="+string(arg), execPathEnv+"=/bin/true")
	g := startGated(t, cmd)
	mustAdd(t, f, g.pid)
	if _, err := g.stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	ev := execOf(t, c, g)
	if _, args, _, ok := f.ExecImage(g.pid, ev.Timestamp, nil); !ok || string(args) != "true\x00member\x00" {
		t.Errorf("the member's exec: %q, %v", args, ok)
	}
	if got := f.ExecSlotTGID(stranger); got == uint32(stranger) {
		t.Errorf("the stranger %d's exec was recorded", stranger)
	}
}

// TestIntegrationExecImageInKernel runs the tree program with the exec
// recorder (BPF_PROG_TEST_RUN) on the main thread of a helper, on a
// datagram of the helper's own exec: the record must be its
// /proc/self/comm and cmdline (RunExecProgram checks them).
func TestIntegrationExecImageInKernel(t *testing.T) {
	attachExecTree(t) // skips where the filter records no exec images
	for _, args := range [][]string{nil, {"", "an argument", ""}, {strings.Repeat("y", 5000)}} {
		out, err := execProgHelper(1, args...)
		if err != nil {
			t.Fatalf("with %d arguments: %v: %s", len(args), err, out)
		}
	}
}

// BenchmarkTreeProgramExec measures, with BPF_PROG_TEST_RUN on a
// helper's main thread, the tree program on a member's exec datagram
// without and with the exec recorder, for the helper's own command line:
// its path alone (some 60 bytes) or with a 4,000-byte argument.
// kernel-ns/run is the kernel's time per run; the difference is the
// recorder's cost per exec event of a member.
func BenchmarkTreeProgramExec(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipping: loading the tree filter needs root")
	}
	for _, tc := range []struct {
		name string
		args []string
	}{{"path", nil}, {"4KB", []string{strings.Repeat("x", 4000)}}} {
		b.Run(tc.name, func(b *testing.B) {
			var plain, rec int64
			runs := 0
			for b.Loop() {
				out, err := execProgHelper(100_000, tc.args...)
				if err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				var p, r int64
				if _, err := fmt.Sscanf(string(out), "plain-ns=%d recorder-ns=%d", &p, &r); err != nil {
					b.Fatalf("helper said %q: %v", out, err)
				}
				plain, rec = plain+p, rec+r
				runs++
			}
			b.ReportMetric(float64(plain)/float64(runs), "plain-kernel-ns/run")
			b.ReportMetric(float64(rec)/float64(runs), "recorder-kernel-ns/run")
		})
	}
}

// execProgHelper runs RunExecProgram(n) in a helper with args after its
// path (the helper parses no flags).
func execProgHelper(n int, args ...string) ([]byte, error) {
	cmd := helperCmd("execprog")
	cmd.Args = append(cmd.Args, args...)
	cmd.Env = append(cmd.Env, execPathEnv+"="+strconv.Itoa(n))
	return cmd.CombinedOutput()
}

// TestIntegrationExecImagesWithoutPerfmon: a root process without
// CAP_PERFMON and CAP_SYS_ADMIN (but with CAP_BPF) gets the filter
// without exec images, and the reason.
func TestIntegrationExecImagesWithoutPerfmon(t *testing.T) {
	got := runWithoutPerfmon(t, "execimages")
	if !strings.HasPrefix(got, "execimages attached=true ok=false") || !strings.Contains(got, "bpf_get_current_task not allowed") {
		t.Errorf("helper said %q; want the filter attached without exec images, for want of bpf_get_current_task", got)
	}
}
