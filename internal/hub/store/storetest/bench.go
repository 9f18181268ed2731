package storetest

import (
	"fmt"
	"testing"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// Bench measures what the hub's fleet benchmark leans on: a new desired
// revision for every vehicle of a fleet after one deployment change,
// written in batches, and single writes. open returns a new, empty store
// and closes it when b ends.
func Bench(b *testing.B, open func(b *testing.B) store.Store) {
	for _, bc := range []struct {
		vehicles, batch int
	}{{10_000, 250}, {10_000, 1}} {
		b.Run(fmt.Sprintf("fleet=%d/batch=%d", bc.vehicles, bc.batch), func(b *testing.B) {
			s := open(b)
			ctx := b.Context()
			ids := make([]string, bc.vehicles)
			for i := range ids {
				ids[i] = fmt.Sprintf("car-%05d", i)
				if err := s.CreateVehicle(ctx, hubv1.Vehicle{ID: ids[i]}); err != nil {
					b.Fatal(err)
				}
			}
			// A realistic envelope: a few KB of signed manifests.
			payload := make([]byte, 4096)
			for i := range payload {
				payload[i] = byte('a' + i%26)
			}
			rev := int64(0)
			b.ResetTimer()
			for b.Loop() {
				rev++
				for start := 0; start < len(ids); start += bc.batch {
					batch := make([]store.Desired, 0, bc.batch)
					for _, id := range ids[start:min(start+bc.batch, len(ids))] {
						d := desired(id, hubv1.HalfVehicle, rev)
						d.Envelope.Payload = payload
						batch = append(batch, d)
					}
					if err := s.PutDesiredBatch(ctx, batch); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*bc.vehicles), "µs/vehicle")
		})
	}
}
