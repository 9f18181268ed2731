package server

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/proxy/admin"
	"github.com/misaki-io/misaki/internal/proxy/budget"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/link"
)

// Metering cadence: metered connections are read every meterInterval
// (which is how far past its allowance a route can go before its
// metered links close to it, plus what is in flight), and the counts
// are written every flushEvery reads and at shutdown.
const (
	meterInterval = time.Second
	flushEvery    = 10
)

var (
	budgetUsedDesc = prometheus.NewDesc("misaki_proxy_route_budget_used_bytes",
		"Bytes the route carried over metered links in the current period (day or month, UTC).", []string{"route", "period"}, nil)
	budgetLimitDesc = prometheus.NewDesc("misaki_proxy_route_budget_limit_bytes",
		"The route's allowance on metered links for the period.", []string{"route", "period"}, nil)
	budgetExceededDesc = prometheus.NewDesc("misaki_proxy_route_budget_exceeded",
		"1 while the route is over its metered allowance and may not use metered links.", []string{"route"}, nil)
)

func (s *Server) budgeted() bool {
	for _, r := range s.cfg.Routes {
		if r.Offline.Budget.Set() {
			return true
		}
	}
	return s.cfg.XDS.Server != "" && s.cfg.Spool.Dir != "" // routes may come with budgets later
}

// openLedger opens the budget counts kept beside the spool.
func (s *Server) openLedger() error {
	if !s.budgeted() {
		return nil
	}
	l, err := budget.Open(filepath.Join(s.cfg.Spool.Dir, "budgets.json"), s.clock)
	if err != nil {
		return err
	}
	s.ledger = l
	return nil
}

func limits(b config.Budget) budget.Limits {
	return budget.Limits{Daily: int64(b.Daily), Monthly: int64(b.Monthly)}
}

// overBudget reports whether the route may not use metered links now.
func (s *Server) overBudget(rt *liveRoute) (bool, string) {
	if s.ledger == nil || !rt.cfg.Offline.Budget.Set() {
		return false, ""
	}
	st := s.ledger.Status(rt.cfg.Name, limits(rt.cfg.Offline.Budget))
	if !st.Exceeded {
		return false, ""
	}
	return true, fmt.Sprintf("over its metered budget (%d bytes today, %d this month) until %s",
		st.DailyBytes, st.MonthlyBytes, st.Resets.Format(time.RFC3339))
}

// meter reads every route's metered bytes each interval, counts them
// against the budgets, and re-evaluates the routes when one crosses its
// allowance or a new period frees it. At shutdown it counts last, once the
// mesh server is done: requests in flight finish in its grace, and their
// bytes count too.
func (s *Server) meter(ctx context.Context) error {
	for i := 1; ; i++ {
		t := s.clock.NewTimer(meterInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			<-s.httpDone
			s.takeMetered()
			if s.ledger != nil {
				if err := s.ledger.Flush(); err != nil {
					s.log.Error("write the budget counts", "err", err)
				}
			}
			return nil
		case <-t.C():
		}
		if s.takeMetered() {
			s.evaluate()
		}
		if s.ledger != nil && i%flushEvery == 0 {
			if err := s.ledger.Flush(); err != nil {
				s.log.Error("write the budget counts", "err", err)
			}
		}
	}
}

// takeMetered counts the bytes of the routes' metered connections and
// reports whether a route's budget verdict changed.
func (s *Server) takeMetered() bool {
	s.evalMu.Lock()
	routes := s.allRoutes()
	s.evalMu.Unlock()
	changed := false
	for _, rt := range routes {
		for l, n := range rt.fwd.MeteredBytes() {
			s.metrics.meteredBytes.WithLabelValues(rt.cfg.Name, l).Add(float64(n))
			if s.ledger != nil && rt.cfg.Offline.Budget.Set() {
				s.ledger.Add(rt.cfg.Name, n)
			}
		}
		if over, _ := s.overBudget(rt); over != rt.over.Load() {
			changed = true
		}
	}
	return changed
}

func (s *Server) collectBudgets(ch chan<- prometheus.Metric) {
	if s.ledger == nil {
		return
	}
	for _, rt := range s.set.Load().routes {
		b := rt.cfg.Offline.Budget
		if !b.Set() {
			continue
		}
		st := s.ledger.Status(rt.cfg.Name, limits(b))
		ch <- prometheus.MustNewConstMetric(budgetUsedDesc, prometheus.GaugeValue, float64(st.DailyBytes), rt.cfg.Name, "day")
		ch <- prometheus.MustNewConstMetric(budgetUsedDesc, prometheus.GaugeValue, float64(st.MonthlyBytes), rt.cfg.Name, "month")
		if b.Daily > 0 {
			ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, float64(b.Daily), rt.cfg.Name, "day")
		}
		if b.Monthly > 0 {
			ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, float64(b.Monthly), rt.cfg.Name, "month")
		}
		ch <- prometheus.MustNewConstMetric(budgetExceededDesc, prometheus.GaugeValue, oneIf(st.Exceeded), rt.cfg.Name)
	}
}

var _ admin.AgentStatuser = (*link.Monitor)(nil)

// agentWait bounds how long a start waits for the node link agent's first
// snapshot before serving: long enough for an agent on the same node,
// short enough that a node without one starts the proxy anyway.
const agentWait = 2 * time.Second

// restricted reports whether a policy may not take every link.
func restricted(p config.Offline) bool {
	return len(p.Links) > 0 || p.Metered == config.Deny || p.Roaming == config.Deny || p.Budget.Set()
}

// budgetStatus is the route's use of its metered allowance for
// GET /v1/routes; nil when it has none.
func (s *Server) budgetStatus(rt *liveRoute) *proxyv1.Budget {
	if s.ledger == nil || !rt.cfg.Offline.Budget.Set() {
		return nil
	}
	st := s.ledger.Status(rt.cfg.Name, limits(rt.cfg.Offline.Budget))
	return &proxyv1.Budget{
		Day: st.Day, Month: st.Month, DailyBytes: st.DailyBytes, MonthlyBytes: st.MonthlyBytes,
		DailyLimit: st.DailyLimit, MonthlyLimit: st.MonthlyLimit, Exceeded: st.Exceeded, Resets: st.Resets,
	}
}
