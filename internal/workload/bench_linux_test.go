//go:build linux && (amd64 || arm64)

package workload

import (
	"testing"
	"time"
)

// benchStorm runs b.N storms of n children and reports the fork rate the
// root achieved (children per second of forking) and the time until all
// were reaped.
func benchStorm(b *testing.B, st Storm) {
	var forking, total time.Duration
	children := 0
	for b.Loop() {
		s := st
		p := start(b, Spec{Storm: &s})
		res, err := p.Wait()
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Records) != st.Count {
			b.Fatalf("%d records, want %d", len(res.Records), st.Count)
		}
		forking += res.ForksDone.Sub(res.Start)
		total += res.End.Sub(res.Start)
		children += st.Count
	}
	b.ReportMetric(float64(children)/forking.Seconds(), "children/s")
	b.ReportMetric(float64(total.Microseconds())/float64(children), "µs-to-reap/child")
}

func BenchmarkStormForkOnly(b *testing.B) {
	benchStorm(b, Storm{Count: 1000})
}

func BenchmarkStormForkOnly1ms(b *testing.B) {
	benchStorm(b, Storm{Count: 1000, Lifetime: time.Millisecond})
}

func BenchmarkStormForkExecSh(b *testing.B) {
	benchStorm(b, Storm{Count: 500, Mode: ForkExec})
}

func BenchmarkStormForkExecBash1ms(b *testing.B) {
	benchStorm(b, Storm{Count: 500, Mode: ForkExec, Lifetime: time.Millisecond})
}

func BenchmarkOrphans(b *testing.B) {
	var forking time.Duration
	n := 0
	for b.Loop() {
		p := start(b, Spec{Orphans: &Orphans{Count: 500}})
		res, err := p.Wait()
		if err != nil {
			b.Fatal(err)
		}
		forking += res.End.Sub(res.Start)
		n += len(res.Records)
	}
	b.ReportMetric(float64(n)/forking.Seconds(), "processes/s")
}
