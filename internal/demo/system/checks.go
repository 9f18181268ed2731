package system

import (
	"fmt"
	"strings"
	"sync"

	"github.com/misaki-io/misaki/internal/demo"
)

// checks collects the verdicts as the story makes them.
type checks struct {
	con *console

	mu   sync.Mutex // guards list
	list []demo.CheckResult
}

// add records a verdict and prints it at once.
func (c *checks) add(name string, ok bool, detail string) {
	c.mu.Lock()
	c.list = append(c.list, demo.CheckResult{Name: name, OK: ok, Detail: detail})
	c.mu.Unlock()
	c.con.printf("  %s  %s%s\n", verdict(ok), name, paren(detail))
}

// addAll records verdicts already printed (the data-plane scenarios'),
// their names prefixed.
func (c *checks) addAll(prefix string, rs []demo.CheckResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rs {
		r.Name = prefix + r.Name
		c.list = append(c.list, r)
	}
}

// report prints every verdict and reports whether all passed.
func (c *checks) report() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	b.WriteString("\n== checks ==\n")
	failed := 0
	for _, r := range c.list {
		if !r.OK {
			failed++
		}
		fmt.Fprintf(&b, "  %s  %s%s\n", verdict(r.OK), r.Name, paren(r.Detail))
	}
	switch {
	case len(c.list) == 0:
		b.WriteString("\nno check ran\n")
	case failed == 0:
		fmt.Fprintf(&b, "\nall %d checks passed\n", len(c.list))
	default:
		fmt.Fprintf(&b, "\n%d of %d checks FAILED\n", failed, len(c.list))
	}
	c.con.printf("%s", b.String())
	return failed == 0 && len(c.list) > 0
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return "  (" + s + ")"
}
