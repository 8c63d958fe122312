package main

import (
	"os"
	"time"
)

// pumpStop says why the pump returned.
type pumpStop int

const (
	// stopDone: the phase's condition (pumpOpts.until) held.
	stopDone pumpStop = iota
	// stopTimer: the phase's timer fired.
	stopTimer
	// stopSignal: a signal arrived that the phase stops on.
	stopSignal
)

// pumpOpts describe one phase of a run or a watch: what ends it and what
// else it reacts to. Every zero field means "nothing of that kind".
type pumpOpts struct {
	// until ends the phase when it returns true. It is checked before the
	// first wait and after everything the pump handles.
	until func() bool
	// tick is how often the Watcher is polled (which, in polling mode,
	// scans /proc); zero means the session's --poll-interval.
	tick time.Duration
	// timer ends the phase when it fires.
	timer <-chan time.Time
	// every calls onEvery each time it fires (watch's --interval
	// snapshots).
	every   <-chan time.Time
	onEvery func()
	// sigs are the signals the phase listens to. onSignal handles one and
	// says whether the phase stops; a nil onSignal stops on any.
	sigs     <-chan os.Signal
	onSignal func(os.Signal) bool
}

// pump is the one event loop of pwatch run and pwatch watch. It handles
// the tree's events as they come, polls the Watcher every tick, reaps
// pwatch's children (run), flushes the outputs on time, and returns when
// the phase ends. The signal that stopped it, if any, is returned.
func (s *session) pump(o pumpOpts) (pumpStop, os.Signal) {
	tickEvery := o.tick
	if tickEvery <= 0 {
		tickEvery = s.out.pollInterval
	}
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		if o.until != nil && o.until() {
			return stopDone, nil
		}
		select {
		case ev, ok := <-s.evc:
			if !ok {
				s.evc = nil
				continue
			}
			s.handleBatch(ev)
		case <-tick.C:
			s.poll()
		case <-s.childExited():
			s.reapChildren()
		case <-s.flushDue():
			s.flushFiles()
		case <-o.every:
			o.onEvery()
		case <-o.timer:
			return stopTimer, nil
		case sig := <-o.sigs:
			if o.onSignal == nil || o.onSignal(sig) {
				return stopSignal, sig
			}
		}
	}
}
