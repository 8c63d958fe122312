package workload

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// ErrBadStat is wrapped by errors for a /proc/PID/stat line that does not
// parse.
var ErrBadStat = errors.New("workload: malformed /proc stat line")

// Stat is the part of /proc/PID/stat the workload uses.
type Stat struct {
	Comm       string // field 2, without the parentheses
	State      byte   // field 3
	PPID       int    // field 4
	PGRP       int    // field 5
	StartTicks uint64 // field 22, clock ticks since boot
}

// ParseStat parses one /proc/PID/stat line. The comm may contain spaces and
// parentheses, so the line is split at the last ')'.
func ParseStat(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("%w: no (comm)", ErrBadStat)
	}
	st := Stat{Comm: string(b[open+1 : end])}
	// Fields from 3 on, separated by single spaces.
	rest := bytes.Fields(b[end+1:])
	if len(rest) < 20 { // fields 3..22
		return Stat{}, fmt.Errorf("%w: %d fields after comm, want >= 20", ErrBadStat, len(rest))
	}
	if len(rest[0]) != 1 {
		return Stat{}, fmt.Errorf("%w: state %q", ErrBadStat, rest[0])
	}
	st.State = rest[0][0]
	var err error
	if st.PPID, err = strconv.Atoi(string(rest[1])); err != nil {
		return Stat{}, fmt.Errorf("%w: ppid: %v", ErrBadStat, err)
	}
	if st.PGRP, err = strconv.Atoi(string(rest[2])); err != nil {
		return Stat{}, fmt.Errorf("%w: pgrp: %v", ErrBadStat, err)
	}
	if st.StartTicks, err = strconv.ParseUint(string(rest[19]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("%w: starttime: %v", ErrBadStat, err)
	}
	return st, nil
}

// ReadStat reads and parses /proc/PID/stat. A process that is gone gives an
// error wrapping fs.ErrNotExist.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("workload: %w", err)
	}
	st, err := ParseStat(b)
	if err != nil {
		return Stat{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return st, nil
}

// ReadStartTicks returns the start time of process pid in clock ticks since
// boot (/proc/PID/stat field 22); with the PID it identifies the process.
func ReadStartTicks(pid int) (uint64, error) {
	st, err := ReadStat(pid)
	return st.StartTicks, err
}
