package taskstats_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/process-watchman/watchman/taskstats"
	"github.com/process-watchman/watchman/taskstats/taskstatstest"
)

// FuzzDecode feeds arbitrary bytes to DecodeMessage (as a generic netlink
// message) and to Decode (as a struct taskstats). Neither may panic; every
// error is a *DecodeError matching exactly one sentinel; a failed
// DecodeMessage leaves dst as it was; a successful one appends records of
// a known kind, a KindTGID one only after a KindPID one that announces it.
// The seed corpus holds the messages captured from Linux 6.18 under
// testdata (and testdata/fuzz/FuzzDecode).
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.genl")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if len(b) > 24 {
			f.Add(b[24:]) // the struct of the first nest
		}
	}
	task := taskstats.Record{PID: 7, TGID: 7, Flags: taskstats.FlagGroupDead}
	f.Add(taskstatstest.EncodeMessage(&task, &taskstats.Record{TGID: 7}))
	f.Add(taskstatstest.EncodeStats(&task))
	f.Add([]byte{})
	sentinels := []error{taskstats.ErrTruncated, taskstats.ErrForeign, taskstats.ErrMalformed}
	checkErr := func(t *testing.T, err error) {
		var de *taskstats.DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("error %T %v is not a *DecodeError", err, err)
		}
		n := 0
		for _, s := range sentinels {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %v matches %d sentinels", err, n)
		}
		_ = err.Error()
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dst := make([]taskstats.Record, 1, 3)
		dst[0].PID = -1
		got, err := taskstats.DecodeMessage(b, dst)
		if err != nil {
			checkErr(t, err)
			if len(got) != 1 || got[0].PID != -1 {
				t.Fatalf("dst changed on error: %d records", len(got))
			}
		} else {
			if len(got) < 2 {
				t.Fatalf("success without a record")
			}
			for i, r := range got[1:] {
				switch r.Kind {
				case taskstats.KindPID:
				case taskstats.KindTGID:
					if r.PID != 0 {
						t.Fatalf("KindTGID record with PID %d", r.PID)
					}
				default:
					t.Fatalf("record %d of kind %v", i, r.Kind)
				}
				if r.WithGroup && (i+2 >= len(got) || got[i+2].Kind != taskstats.KindTGID || got[i+2].TGID != r.TGID) {
					t.Fatalf("record %d announces an aggregate that does not follow", i)
				}
			}
		}
		var r taskstats.Record
		if err := taskstats.Decode(b, &r); err != nil {
			checkErr(t, err)
			if r != (taskstats.Record{}) {
				t.Fatalf("record not zero after error")
			}
		} else if r.Version != 0 && r.Version < taskstats.MinVersion {
			t.Fatalf("accepted version %d", r.Version)
		}
	})
}

// FuzzReceive feeds an arbitrary datagram from the kernel's port through
// a Listener (over the fake kernel), followed by a good record: Receive
// must not panic, must count the datagram, and must still deliver the
// good record.
func FuzzReceive(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.genl")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(taskstatstest.EncodeDatagram(taskstatstest.DefaultFamily, 0, 0, 0, b))
	}
	f.Add(taskstatstest.EncodeDatagram(2, 0, 1, 0, make([]byte, 20)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k := taskstatstest.NewKernel()
		l, err := k.Listen(&taskstats.Config{CPUs: "0"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		k.EmitRaw(0, b)
		good := taskstats.Record{Kind: taskstats.KindPID, Version: 16, PID: -7, TGID: -7, Flags: taskstats.FlagGroupDead}
		k.ExitTask(&good, nil)
		buf := make([]taskstats.Record, 0, 2*taskstats.MaxBatch)
		for {
			recs, err := l.Receive(buf[:0])
			if err != nil {
				t.Fatal(err)
			}
			if n := len(recs); n > 0 && recs[n-1].PID == -7 {
				break
			}
		}
		if st := l.Stats(); st.Datagrams < 2 {
			t.Fatalf("stats %+v after two datagrams", st)
		}
	})
}
