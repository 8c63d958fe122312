package reconcile

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestHasChildrenFiles(t *testing.T) {
	if !fakeFS(t).HasChildrenFiles() {
		t.Error("the fake tree has 1/task/1/children but HasChildrenFiles says no")
	}
	noFiles, _ := tempProcRoot(t, map[string]string{"1/stat": "1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5\n"})
	if noFiles.HasChildrenFiles() {
		t.Error("a tree without children files says it has them")
	}
	sc := noFiles.NewScanner()
	if _, err := sc.Children(1, nil); !errors.Is(err, ErrNoChildrenFiles) {
		t.Errorf("Children without the files = %v, want ErrNoChildrenFiles", err)
	}
	var w Walk
	if err := sc.Walk(&w, []Member{{PID: 1, StartTicks: 5}}); !errors.Is(err, ErrNoChildrenFiles) {
		t.Errorf("Walk without the files = %v, want ErrNoChildrenFiles", err)
	}
	if !realFS(t).HasChildrenFiles() {
		t.Error("this kernel has /proc/thread-self/children but HasChildrenFiles says no")
	}
}

func TestChildrenFake(t *testing.T) {
	checkNoFDLeak(t)
	sc := fakeFS(t).NewScanner()
	tests := []struct {
		pid  int
		want []int
	}{
		{1, []int{100, 150, 200}},
		{100, []int{101, 103}},
		// 102 has three threads; its child 106 was forked by thread 105,
		// and thread 104's file lists 106 again (a read that raced a
		// change): it is kept once.
		{102, []int{106}},
		{106, nil},
	}
	for _, tt := range tests {
		got, err := sc.Children(tt.pid, []int{-1})
		if err != nil {
			t.Errorf("Children(%d): %v", tt.pid, err)
			continue
		}
		if diff := cmp.Diff(append([]int{-1}, tt.want...), got); diff != "" {
			t.Errorf("Children(%d) appended (-want +got):\n%s", tt.pid, diff)
		}
	}
	if got, err := sc.Children(999, nil); !errors.Is(err, ErrGone) || len(got) != 0 {
		t.Errorf("Children(999) = %v, %v; want ErrGone", got, err)
	}
}

type walkRow struct {
	PID, PPID     int
	Status        Status
	Found, Reused bool
	Parent        int
	Comm          string
	Children      []int
}

func walkRows(w *Walk) []walkRow {
	var rows []walkRow
	for i, r := range w.Results {
		rows = append(rows, walkRow{r.PID, r.Entry.PPID, r.Status, r.Found, r.Reused, r.Parent,
			string(w.Comm(i)), slices.Clone(w.Children(i))})
	}
	return rows
}

func TestWalkFake(t *testing.T) {
	checkNoFDLeak(t)
	sc := fakeFS(t).NewScanner()
	var w Walk
	members := []Member{
		{PID: 100, StartTicks: 1000},
		{PID: 150, StartTicks: 1400}, // reparented to init: still a member
		{PID: 103, StartTicks: 1300}, // a zombie
		{PID: 200, StartTicks: 1},    // the PID names another process now
		{PID: 555, StartTicks: 1},    // gone
	}
	if err := sc.Walk(&w, members); err != nil {
		t.Fatal(err)
	}
	want := []walkRow{
		{100, 1, StatusAlive, false, false, -1, "bash", []int{101, 103}},
		{150, 1, StatusAlive, false, false, -1, "orphan", []int{}},
		{103, 100, StatusExited, false, false, -1, "dead", []int{}},
		{200, 1, StatusGone, false, true, -1, "other", []int{}},
		{555, 0, StatusGone, false, false, -1, "", []int{}},
		{101, 100, StatusAlive, true, false, 0, "sleep", []int{102}},
		{102, 101, StatusAlive, true, false, 5, "a) (b c", []int{106}},
		{106, 102, StatusAlive, true, false, 6, "threadkid", []int{}},
	}
	if diff := cmp.Diff(want, walkRows(&w)); diff != "" {
		t.Errorf("Walk (-want +got):\n%s", diff)
	}
	if i, ok := w.Index(106); !ok || w.Results[i].PID != 106 {
		t.Errorf("Index(106) = %d, %v", i, ok)
	}
	if _, ok := w.Index(201); ok {
		t.Error("Index(201): a process below no member is indexed")
	}
	if got := w.Results[6].StartTicks; got != 1200 {
		t.Errorf("a found process's StartTicks = %d, want its stat's 1200", got)
	}
	// SameStart decides with Approx.
	w.SameStart = func(known, got uint64, approx bool) bool {
		return known == got || approx && known+1000 > got && got+1000 > known
	}
	if err := sc.Walk(&w, []Member{{PID: 200, StartTicks: 1, Approx: true}}); err != nil {
		t.Fatal(err)
	}
	if r := w.Results[0]; r.Status != StatusAlive || len(w.Children(0)) != 1 || len(w.Results) != 2 {
		t.Errorf("approximate member: %+v, children %v, %d results", r, w.Children(0), len(w.Results))
	}
	// A steady-state walk does not allocate.
	w.SameStart = nil
	if n := testing.AllocsPerRun(20, func() {
		if err := sc.Walk(&w, members); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Walk allocates %v times per run, want 0", n)
	}
}

// TestChildrenThreads forks children from several threads of a helper, none
// of them the first, and finds them all.
func TestChildrenThreads(t *testing.T) {
	checkNoFDLeak(t)
	fs := realFS(t)
	const n = 4
	h := startThreadsHelper(t, n)
	nonFirst := 0
	var want []int
	for _, k := range h.kids {
		want = append(want, k.pid)
		if k.tid != h.cmd.Process.Pid {
			nonFirst++
		}
	}
	slices.Sort(want)
	if nonFirst < n-1 {
		t.Fatalf("only %d of %d children were forked by a thread other than the first", nonFirst, n)
	}
	sc := fs.NewScanner()
	got, err := sc.Children(h.cmd.Process.Pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Children of the threaded helper (-want +got):\n%s", diff)
	}
	// Each child is listed in its forking thread's file.
	for _, k := range h.kids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", h.cmd.Process.Pid, k.tid))
		if err != nil || !slices.Contains(strings.Fields(string(b)), strconv.Itoa(k.pid)) {
			t.Errorf("task %d's children file %q (%v) does not list %d", k.tid, b, err, k.pid)
		}
	}
	var w Walk
	if err := sc.Walk(&w, []Member{{PID: h.cmd.Process.Pid, StartTicks: startTicksOf(t, fs, h.cmd.Process.Pid)}}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, w.Children(0)); diff != "" || len(w.Results) != n+1 {
		t.Errorf("Walk: %d results, children (-want +got):\n%s", len(w.Results), diff)
	}
	for _, r := range w.Results[1:] {
		if !r.Found || r.Status != StatusAlive || r.Entry.PPID != h.cmd.Process.Pid {
			t.Errorf("found child %+v", r)
		}
	}
}

type threadKid struct{ tid, pid int }

type threadsHelper struct {
	cmd  *exec.Cmd
	kids []threadKid
}

// startThreadsHelper starts a helper whose n threads other than the first
// each fork a "sleep"; it ends them all when the test ends.
func startThreadsHelper(t *testing.T, n int) *threadsHelper {
	t.Helper()
	c := helperCmd(t, "threads", "PWATCH_THREADS="+strconv.Itoa(n))
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the helper ends its children and exits
		if err := c.Wait(); err != nil {
			t.Errorf("threads helper: %v", err)
		}
	})
	h := &threadsHelper{cmd: c}
	sc := bufio.NewScanner(stdout)
	for len(h.kids) < n && sc.Scan() {
		var k threadKid
		if _, err := fmt.Sscan(sc.Text(), &k.tid, &k.pid); err != nil {
			t.Fatalf("helper said %q: %v", sc.Text(), err)
		}
		h.kids = append(h.kids, k)
	}
	if len(h.kids) < n {
		t.Fatalf("helper reported %d children: %v", len(h.kids), sc.Err())
	}
	return h
}

// helperThreads: PWATCH_THREADS threads, none the first, each fork a
// sleep and print "TID PID"; on EOF on stdin it kills them and exits.
func helperThreads() {
	runtime.LockOSThread() // keeps the other goroutines off the first thread
	n, _ := strconv.Atoi(os.Getenv("PWATCH_THREADS"))
	type kid struct {
		tid int
		cmd *exec.Cmd
	}
	kids := make(chan kid)
	release := make(chan struct{})
	for range n {
		go func() {
			runtime.LockOSThread() // stays on this thread while its child lives
			c := exec.Command("sleep", "3600")
			if err := c.Start(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			kids <- kid{unix.Gettid(), c}
			<-release
		}()
	}
	var all []kid
	for range n {
		k := <-kids
		all = append(all, k)
		fmt.Printf("%d %d\n", k.tid, k.cmd.Process.Pid)
	}
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	for _, k := range all {
		_ = k.cmd.Process.Kill()
		_ = k.cmd.Wait()
	}
	close(release)
}

// TestWalkOrphan: a member whose parent exited is reparented, and is
// still found by its own PID, with its children.
func TestWalkOrphan(t *testing.T) {
	checkNoFDLeak(t)
	fs := realFS(t)
	// The outer shell starts an inner one, which starts a sleep, and
	// exits when its input closes: the inner shell is orphaned.
	c := exec.Command("sh", "-c", `sh -c 'sleep 3600 & echo $! && wait' </dev/null & echo $!; read x || true`)
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	outer := c.Process.Pid
	outerStart := startTicksOf(t, fs, outer)
	sc := bufio.NewScanner(stdout)
	var pids []int
	for len(pids) < 2 && sc.Scan() {
		p, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p)
	}
	if len(pids) < 2 {
		t.Fatalf("pids %v", pids)
	}
	// "$!" of the outer shell is the inner one; the inner one's is the
	// sleep. Which line came first is up to the scheduler.
	inner, sleeper := pids[0], pids[1]
	if st, err := fs.ReadStat(inner); err == nil && st.PPID != outer {
		inner, sleeper = sleeper, inner
	}
	t.Cleanup(func() {
		_ = unix.Kill(sleeper, unix.SIGKILL)
		_ = unix.Kill(inner, unix.SIGKILL)
	})
	innerStart := startTicksOf(t, fs, inner)
	// Both members known while the outer shell lives.
	sx := fs.NewScanner()
	var w Walk
	if err := sx.Walk(&w, []Member{{PID: outer, StartTicks: outerStart}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(w.Children(0), inner) {
		t.Fatalf("outer shell's children %v lack the inner shell %d", w.Children(0), inner)
	}
	stdin.Close()
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	// The outer shell is reaped: the inner one is an orphan now.
	members := []Member{{PID: outer, StartTicks: outerStart}, {PID: inner, StartTicks: innerStart}}
	if err := sx.Walk(&w, members); err != nil {
		t.Fatal(err)
	}
	if r := w.Results[0]; r.Status != StatusGone {
		t.Errorf("reaped outer shell: %v", r.Status)
	}
	r := w.Results[1]
	if r.Status != StatusAlive || r.Entry.PPID == outer {
		t.Errorf("orphan: status %v, ppid %d", r.Status, r.Entry.PPID)
	}
	if diff := cmp.Diff([]int{sleeper}, w.Children(1)); diff != "" {
		t.Errorf("orphan's children (-want +got):\n%s", diff)
	}
	if len(w.Results) != 3 || w.Results[2].PID != sleeper || !w.Results[2].Found || w.Results[2].Parent != 1 {
		t.Errorf("the orphan's child was not found: %+v", w.Results)
	}
}

// TestWalkExitMidWalk ends a member between its stat and its children
// read: it is gone, not an error, and no other process's children are
// taken for its own.
func TestWalkExitMidWalk(t *testing.T) {
	checkNoFDLeak(t)
	fs := realFS(t)
	c := exec.Command("sleep", "3600")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	start := startTicksOf(t, fs, pid)
	sc := fs.NewScanner()
	var w Walk
	ended := false
	sc.beforeChildren = func(p int) {
		if p != pid || ended {
			return
		}
		ended = true
		_ = c.Process.Kill()
		_ = c.Wait() // reaped: /proc/PID is gone
	}
	if err := sc.Walk(&w, []Member{{PID: pid, StartTicks: start}}); err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if !ended {
		t.Fatal("the hook did not run")
	}
	if r := w.Results[0]; r.Status != StatusGone || len(w.Children(0)) != 0 {
		t.Errorf("member that exited mid-walk: %+v, children %v", r, w.Children(0))
	}
	// Killed but not reaped: a zombie, which has exited.
	z := exec.Command("sleep", "3600")
	if err := z.Start(); err != nil {
		t.Fatal(err)
	}
	zs := startTicksOf(t, fs, z.Process.Pid)
	_ = z.Process.Kill()
	waitZombie(t, z.Process.Pid)
	defer z.Wait()
	if err := sc.Walk(&w, []Member{{PID: z.Process.Pid, StartTicks: zs}}); err != nil {
		t.Fatal(err)
	}
	if r := w.Results[0]; r.Status != StatusExited || r.Entry.State != 'Z' {
		t.Errorf("killed, unreaped child: %v, state %c", r.Status, r.Entry.State)
	}
}

func FuzzAppendPIDList(f *testing.F) {
	f.Add([]byte("12 34 56 "))
	f.Add([]byte("1\n"))
	f.Add([]byte(""))
	f.Add([]byte("0 "))
	f.Add([]byte("99999999999999999999 "))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := appendPIDList([]int{-1}, b)
		if got[0] != -1 {
			t.Fatalf("dst's own elements changed: %v", got)
		}
		if err != nil {
			return
		}
		// What parses prints back to the same numbers.
		var again []byte
		for _, p := range got[1:] {
			if p <= 0 {
				t.Fatalf("accepted pid %d from %q", p, b)
			}
			again = strconv.AppendInt(again, int64(p), 10)
			again = append(again, ' ')
		}
		back, err := appendPIDList(nil, again)
		if err != nil || !slices.Equal(back, got[1:]) {
			t.Fatalf("%q parsed to %v, which reparses to %v, %v", b, got[1:], back, err)
		}
	})
}
