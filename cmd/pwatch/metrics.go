package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/process-watchman/watchman"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the Prometheus metrics of one run or watch, in a registry of
// their own.
type metrics struct {
	reg    *prometheus.Registry
	events *prometheus.CounterVec
	exits  *prometheus.CounterVec
	lost   prometheus.Counter
	// cpu and rss are the histograms of the exits' usage, by source.
	cpu, rss *prometheus.HistogramVec

	srv  *http.Server
	done chan struct{} // closed when the server's goroutine returns
}

// newMetrics makes the metrics of w; live counts the live members of the
// tree (pwatch run's own process aside).
func newMetrics(w *watchman.Watcher, live func() int) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pwatch_events_total", Help: "Events of the watched tree, by type (fork, exec, exit, lost).",
	}, []string{"type"})
	m.exits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pwatch_exits_total",
		Help: "Exits of members of the tree by outcome: success (exit 0), failure (non-zero exit), signal (killed), unknown (found gone by a /proc scan).",
	}, []string{"outcome"})
	m.lost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pwatch_lost_events_total", Help: "Events lost before pwatch saw them, as lost markers counted them.",
	})
	m.cpu = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pwatch_exit_cpu_seconds",
		Help:    "CPU time (user + system) of each exited member over its life, by source of the figure (taskstats, or wait4 for pwatch run's own children, which counts the children they waited for).",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 11), // 1 ms to 17 min
	}, []string{"source"})
	m.rss = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pwatch_exit_peak_rss_bytes",
		Help:    "Peak resident set size of each exited member, by source of the figure (taskstats, or wait4 for pwatch run's own children).",
		Buckets: prometheus.ExponentialBuckets(1<<20, 4, 10), // 1 MiB to 256 GiB
	}, []string{"source"})
	// Every series exists from the start, at zero.
	for _, t := range []string{"fork", "exec", "exit", "lost"} {
		m.events.WithLabelValues(t)
	}
	for _, o := range []string{"success", "failure", "signal", "unknown"} {
		m.exits.WithLabelValues(o)
	}
	for _, src := range []string{watchman.UsageTaskstats, watchman.UsageWait4} {
		m.cpu.WithLabelValues(src)
		m.rss.WithLabelValues(src)
	}
	liveGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pwatch_live_processes", Help: "Live members of the tree, the root included.",
	}, func() float64 { return float64(live()) })
	mode := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pwatch_mode_info", Help: "How pwatch learns of processes (connector or poll), as a label.",
		ConstLabels: prometheus.Labels{"mode": string(w.Mode())},
	})
	mode.Set(1)
	m.reg.MustRegister(m.events, m.exits, m.lost, m.cpu, m.rss, liveGauge, mode, newStatsCollector(w))
	return m
}

// observe counts one event.
func (m *metrics) observe(ev *watchman.Event) {
	m.events.WithLabelValues(string(ev.Type)).Inc()
	switch {
	case ev.Type == watchman.EventLost:
		m.lost.Add(float64(ev.Lost))
	case ev.Type != watchman.EventExit || ev.Exit == nil:
	case !ev.Exit.StatusKnown:
		m.exits.WithLabelValues("unknown").Inc()
	case ev.Exit.Signal > 0:
		m.exits.WithLabelValues("signal").Inc()
	case ev.Exit.Code != 0:
		m.exits.WithLabelValues("failure").Inc()
	default:
		m.exits.WithLabelValues("success").Inc()
	}
}

// observeUsage adds one exit's usage to the histograms.
func (m *metrics) observeUsage(u *watchman.Usage) {
	m.cpu.WithLabelValues(u.Source).Observe((u.UserCPU + u.SystemCPU).Seconds())
	m.rss.WithLabelValues(u.Source).Observe(float64(u.PeakRSS))
}

// listenMetrics opens the metrics address (before any file is created:
// a bad address is a usage error). An empty addr gives nil.
func listenMetrics(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("--metrics-addr: %w", err)}
	}
	return ln, nil
}

// serve says on stderr where ln is, and serves /metrics on it until
// close.
func (m *metrics) serve(ln net.Listener, stderr io.Writer) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	m.done = make(chan struct{})
	fmt.Fprintf(stderr, "pwatch: metrics on http://%s/metrics\n", ln.Addr())
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "pwatch: metrics server: %v\n", err)
		}
	}()
}

// close stops the server, letting a scrape in flight finish for a moment.
func (m *metrics) close() {
	if m == nil || m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if m.srv.Shutdown(ctx) != nil {
		m.srv.Close()
	}
	<-m.done
}

// statsCollector exports Watcher.Stats and Hub.Stats, read once per scrape.
type statsCollector struct {
	w *watchman.Watcher

	reconciles, fullScans, reconcileSeconds, lastReconcile *prometheus.Desc
	repairs, overruns, hubEvents, hubLost                  *prometheus.Desc
	usageMatched, usageMissing                             *prometheus.Desc
}

func newStatsCollector(w *watchman.Watcher) *statsCollector {
	return &statsCollector{
		w: w,
		reconciles: prometheus.NewDesc("pwatch_reconciles_total",
			"Checks of the tree against /proc (full host scans and tree-local checks).", nil, nil),
		fullScans: prometheus.NewDesc("pwatch_full_scans_total",
			"Full scans of /proc.", nil, nil),
		reconcileSeconds: prometheus.NewDesc("pwatch_reconcile_seconds_total",
			"Total time spent in reconciles.", nil, nil),
		lastReconcile: prometheus.NewDesc("pwatch_last_reconcile_seconds",
			"Duration of the last reconcile.", nil, nil),
		repairs: prometheus.NewDesc("pwatch_reconcile_repairs_total",
			"Corrections reconciles made: members no event announced, members gone without an exit event.", nil, nil),
		overruns: prometheus.NewDesc("pwatch_overruns_total",
			"Times the kernel dropped events because the socket's buffer was full.", nil, nil),
		hubEvents: prometheus.NewDesc("pwatch_hub_kernel_events_total",
			"Proc connector events received for the whole host, threads included, by type.", []string{"type"}, nil),
		hubLost: prometheus.NewDesc("pwatch_hub_kernel_lost_total",
			"Proc connector messages the kernel dropped, where it tells.", nil, nil),
		usageMatched: prometheus.NewDesc("pwatch_usage_matched_total",
			"Exits given the kernel's usage record (taskstats).", nil, nil),
		usageMissing: prometheus.NewDesc("pwatch_usage_missing_total",
			"Exits whose taskstats record did not come in time or was lost.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.reconciles, c.fullScans, c.reconcileSeconds, c.lastReconcile,
		c.repairs, c.overruns, c.hubEvents, c.hubLost, c.usageMatched, c.usageMissing} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.w.Stats()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	counter(c.reconciles, float64(st.Reconciles))
	counter(c.fullScans, float64(st.FullScans))
	counter(c.reconcileSeconds, st.ReconcileTime.Seconds())
	ch <- prometheus.MustNewConstMetric(c.lastReconcile, prometheus.GaugeValue, st.LastReconcile.Seconds())
	counter(c.repairs, float64(st.Repairs))
	counter(c.overruns, float64(st.Overruns))
	counter(c.usageMatched, float64(st.UsageMatched))
	counter(c.usageMissing, float64(st.UsageMissing))
	if h := c.w.Hub(); h != nil {
		hs := h.Stats()
		counter(c.hubEvents, float64(hs.Forks), "fork")
		counter(c.hubEvents, float64(hs.Execs), "exec")
		counter(c.hubEvents, float64(hs.Exits), "exit")
		counter(c.hubEvents, float64(hs.Other), "other")
		counter(c.hubLost, float64(hs.Lost))
	}
}
