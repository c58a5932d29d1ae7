package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// result holds every measurement of one benchmark, by unit.
type result map[string][]float64

func (r result) median(unit string) (float64, bool) {
	v := append([]float64(nil), r[unit]...)
	if len(v) == 0 {
		return 0, false
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

// rate is the throughput of a result, per second.
func (r result) rate() (float64, string, bool) {
	for _, u := range []string{"msgs/s", "pairs/s"} {
		if v, ok := r.median(u); ok {
			return v, u, true
		}
	}
	if ns, ok := r.median("ns/op"); ok && ns > 0 {
		return 1e9 / ns, "ops/s", true
	}
	return 0, "", false
}

var (
	pkgLine   = regexp.MustCompile(`^pkg: (\S+)`)
	benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)
)

// parse reads benchmark output into results keyed by "pkg.BenchmarkName/sub".
func parse(r io.Reader) (map[string]result, []string, error) {
	results := map[string]result{}
	var order []string
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := pkgLine.FindStringSubmatch(line); m != nil {
			pkg = m[1]
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := shortPkg(pkg) + "." + m[1]
		res, ok := results[name]
		if !ok {
			res = result{}
			results[name] = res
			order = append(order, name)
		}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			res[f[i+1]] = append(res[f[i+1]], v)
		}
	}
	return results, order, sc.Err()
}

func shortPkg(p string) string {
	p = strings.TrimPrefix(p, "github.com/uuidforge/uuidforge/")
	p = strings.TrimPrefix(p, "github.com/uuidforge/uuidforge")
	if p == "" {
		return "root"
	}
	return p
}

// row is one line of the table.
type row struct {
	what           string
	ours, base     float64
	unit, baseName string
}

// baselines maps the last name segment of "our" variant to its baselines.
var baselines = map[string][]string{
	"ours":          {"raw"},
	"dedupe-memory": {"plain"},
	"uuidforge":     {"watermill-uuid-key", "watermill-default-key"},
}

// sideBySide finds the two rates of an interleaved benchmark: ours-msgs/s
// against raw-msgs/s, or dedupe-msgs/s against plain-msgs/s.
func sideBySide(res result) (ours, base float64, baseName string, ok bool) {
	for _, p := range [][2]string{{"ours", "raw"}, {"dedupe", "plain"}} {
		o, ok1 := res.median(p[0] + "-msgs/s")
		b, ok2 := res.median(p[1] + "-msgs/s")
		if ok1 && ok2 {
			return o, b, p[1], true
		}
	}
	return 0, 0, "", false
}

func rows(results map[string]result, order []string) []row {
	var out []row
	for _, name := range order {
		res := results[name]
		// Interleaved benchmarks measure both sides in one loop and report
		// each side's rate as its own metric.
		if o, b, baseName, ok := sideBySide(res); ok {
			out = append(out, row{what: name + " (interleaved)", ours: o, base: b, unit: "msgs/s", baseName: baseName})
			continue
		}
		i := strings.LastIndex(name, "/")
		if i < 0 {
			continue
		}
		parent, last := name[:i], name[i+1:]
		ours, unit, ok := res.rate()
		if !ok {
			continue
		}
		// forge: BenchmarkID/x against BenchmarkBaseline/x.
		if strings.HasSuffix(parent, ".BenchmarkID") {
			baseName := strings.TrimSuffix(parent, "ID") + "Baseline/" + last
			if b, ok := results[baseName]; ok {
				if base, _, ok := b.rate(); ok {
					out = append(out, row{what: name, ours: ours, base: base, unit: unit, baseName: "uuid.NewSHA1"})
				}
			}
			continue
		}
		for _, bn := range baselines[last] {
			if b, ok := results[parent+"/"+bn]; ok {
				if base, _, ok := b.rate(); ok {
					out = append(out, row{what: name, ours: ours, base: base, unit: unit, baseName: bn})
				}
			}
		}
	}
	// Stores on their own (no baseline): the claim+complete rate.
	for _, name := range order {
		if strings.Contains(name, "BenchmarkClaimComplete") && !strings.Contains(name, "Baseline") {
			if v, unit, ok := results[name].rate(); ok {
				what := name
				if rt, ok := results[name].median("rt/claim"); ok {
					rc, _ := results[name].median("rt/complete")
					what += fmt.Sprintf(" (round trips: %.2f/claim, %.2f/complete)", rt, rc)
				}
				out = append(out, row{what: what, ours: v, unit: unit})
			}
		}
	}
	return out
}

func main() {
	results, order, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	rs := rows(results, order)
	if len(rs) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results on standard input")
		os.Exit(1)
	}
	w := len("benchmark")
	for _, r := range rs {
		w = max(w, len(r.what))
	}
	fmt.Printf("%-*s  %14s  %-22s %14s  %6s\n", w, "benchmark", "ours", "baseline", "baseline/s", "ratio")
	for _, r := range rs {
		if r.baseName == "" {
			fmt.Printf("%-*s  %14s  %-22s %14s  %6s\n", w, r.what, human(r.ours, r.unit), "-", "-", "-")
			continue
		}
		fmt.Printf("%-*s  %14s  %-22s %14s  %5.2fx\n", w, r.what, human(r.ours, r.unit), r.baseName, human(r.base, r.unit), r.ours/r.base)
	}
}

func human(v float64, unit string) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM %s", v/1e6, unit)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk %s", v/1e3, unit)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}
