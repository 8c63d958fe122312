//go:build linux && (amd64 || arm64)

package main

import (
	"bufio"
	"os"
	"strings"
)

// includeGoBench adds the lines of `go test -bench` output (one row per
// benchmark, its figures as printed) to the table, as section "go".
func includeGoBench(t *table, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	pkg := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(p, "github.com/process-watchman/watchman/")
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			continue
		}
		// name, iterations, then value/unit pairs.
		var figs []string
		for i := 2; i+1 < len(fields); i += 2 {
			figs = append(figs, fields[i]+" "+fields[i+1])
		}
		t.rows = append(t.rows, row{section: goSection, measure: pkg + " " + fields[0], value: strings.Join(figs, ", ")})
	}
	return sc.Err()
}
