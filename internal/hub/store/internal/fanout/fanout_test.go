package fanout

import (
	"context"
	"testing"
)

func TestFanout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		publish []int64
		want    []int64 // what a reader gets, reading once after each publish (0: nothing)
	}{
		{"each", []int64{1, 2, 3}, []int64{1, 2, 3}},
		{"older and repeated dropped", []int64{5, 3, 5, 6}, []int64{5, 0, 0, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f Fanout
			c := f.Subscribe(t.Context())
			for i, seq := range tc.publish {
				f.Publish(seq)
				var got int64
				select {
				case got = <-c:
				default:
				}
				if got != tc.want[i] {
					t.Errorf("after publishing %d: read %d, want %d", seq, got, tc.want[i])
				}
			}
		})
	}
}

func TestCoalesce(t *testing.T) {
	var f Fanout
	a, b := f.Subscribe(t.Context()), f.Subscribe(t.Context())
	for seq := int64(1); seq <= 10; seq++ {
		f.Publish(seq)
	}
	for name, c := range map[string]<-chan int64{"a": a, "b": b} {
		if got := <-c; got != 10 {
			t.Errorf("%s: %d, want the newest 10", name, got)
		}
		select {
		case v := <-c:
			t.Errorf("%s: %d queued behind the newest", name, v)
		default:
		}
	}
}

func TestBaseline(t *testing.T) {
	var f Fanout
	c := f.Subscribe(t.Context())
	f.Baseline(7)
	if f.Publish(7) || f.Publish(3) {
		t.Error("a sequence at or below the baseline was delivered")
	}
	f.Baseline(2) // never lowers it
	if f.Last() != 7 {
		t.Errorf("last %d, want 7", f.Last())
	}
	f.Publish(8)
	if got := <-c; got != 8 {
		t.Errorf("got %d, want 8", got)
	}
}

func TestClose(t *testing.T) {
	var f Fanout
	ctx, cancel := context.WithCancel(t.Context())
	byCtx, byClose := f.Subscribe(ctx), f.Subscribe(t.Context())
	cancel()
	if _, ok := <-byCtx; ok {
		t.Error("the channel whose context ended delivered a value")
	}
	f.Publish(1)
	f.Close()
	// A value published before Close may still be read; then it closes.
	for range byClose {
	}
	if _, ok := <-f.Subscribe(t.Context()); ok {
		t.Error("a subscription after Close is open")
	}
	f.Publish(2) // no panic on closed channels
}
