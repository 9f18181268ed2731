package demo

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// CheckResult is one check's verdict.
type CheckResult struct {
	Name   string
	OK     bool
	Detail string
}

// report prints the result table and the checks, and returns each check's
// verdict.
func report(con *console, r *Result, checks []Check) []CheckResult {
	a, u := r.App, r.Upstream
	var b strings.Builder
	b.WriteString("\n== report ==\n")
	row := func(name string, n int64, note string) {
		fmt.Fprintf(&b, "  %-22s %6d", name, n)
		if note != "" {
			b.WriteString("   " + note)
		}
		b.WriteString("\n")
	}
	row("sent", a.Sent, "")
	row("direct", a.Direct, "2xx, Misaki-Delivery: direct")
	row("held", a.Held, fmt.Sprintf("2xx, Misaki-Delivery: held; waited up to %v", a.MaxHeldWait.Round(100*time.Millisecond)))
	if a.Spooled > 0 || a.Retried > 0 {
		row("spooled", a.Spooled, "202, Misaki-Delivery: spooled; delivered after the link returned")
		row("retried sends", a.Retried, "the app sent again after a connection error (proxy restarting)")
	}
	failedNote := ""
	if a.Failed > 0 {
		failedNote = fmt.Sprintf("%s; %d with Retry-After; sent %s–%s", byStatus(a.FailedByStatus), a.RetryAfter, r.T(a.FirstFailedSent), r.T(a.LastFailedSent))
	}
	row("failed (503)", a.Failed, failedNote)
	row("lost", a.Lost, "no answer at all")
	if a.Bad > 0 {
		row("bad answers", a.Bad, "2xx without a delivery header or seq echo")
	}
	row("upstream received", u.Received, fmt.Sprintf("%d unique", u.Unique))
	row("upstream duplicates", u.Duplicates, "")
	b.WriteString("\nchecks\n")
	all := true
	var res []CheckResult
	for _, c := range checks {
		ok, detail := c.Eval(r)
		all = all && ok
		res = append(res, CheckResult{Name: c.Name, OK: ok, Detail: detail})
		verdict := "PASS"
		if !ok {
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "  %s  %s", verdict, c.Name)
		if detail != "" {
			fmt.Fprintf(&b, "  (%s)", detail)
		}
		b.WriteString("\n")
	}
	if all {
		b.WriteString("\nall checks passed\n")
	} else {
		b.WriteString("\nsome checks FAILED\n")
	}
	con.printf("%s", b.String())
	return res
}

// allOK reports whether every result passed.
func allOK(res []CheckResult) bool {
	for _, c := range res {
		if !c.OK {
			return false
		}
	}
	return true
}

// byStatus writes counts per status like "503×80".
func byStatus(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
