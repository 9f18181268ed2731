//go:build linux

package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/waitfor"
)

// A full disk under the spool, end to end: the app gets a clear 507, every
// request that got a 202 before is delivered once the link returns, and
// the proxy takes requests again once there is room.
func TestDiskFullThroughHTTP(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to mount a small tmpfs")
		}
		mnt := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", mnt).CombinedOutput(); err != nil {
			t.Skipf("mount tmpfs: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })

		up := newUpstream(t, nil)
		p := srv.start(t, spoolYAML(filepath.Join(mnt, "spool"), up.URL, ""), true)
		p.offline(t)

		body := bytes.Repeat([]byte("d"), 3000)
		var acked []string // X-Req-Id of each 202
		var full result
		for i := 0; ; i++ {
			id := fmt.Sprintf("r%d", i)
			r := p.send(context.Background(), "telemetry.cloud.misaki", id, map[string]string{"Prefer": "respond-async"}, body)
			if r.status == http.StatusAccepted {
				acked = append(acked, id)
				if i > 1000 {
					t.Fatal("the tmpfs never filled")
				}
				continue
			}
			full = r
			break
		}
		if full.status != http.StatusInsufficientStorage || !strings.Contains(full.body, "no space left on device") {
			t.Fatalf("on a full disk: %d %q, want 507 naming the cause", full.status, full.body)
		}
		if len(acked) < 10 {
			t.Fatalf("only %d requests acknowledged before the disk filled", len(acked))
		}

		// Room again (the volume grows), the proxy takes requests again.
		if out, err := exec.Command("mount", "-o", "remount,size=4m", mnt).CombinedOutput(); err != nil {
			t.Fatalf("remount: %v %s", err, out)
		}
		p.spoolOne(t, "after", nil, body)
		acked = append(acked, "after")

		// The link returns: every acknowledged request reaches the upstream
		// once, and the refused one never does.
		p.setLink(t, "wlan", "up")
		waitfor.True(t, "every acknowledged request delivered", func() bool { return up.total() >= len(acked) })
		for _, id := range acked {
			if n := up.count(id); n != 1 {
				t.Fatalf("%s reached the upstream %d times, want once", id, n)
			}
		}
		if up.total() != len(acked) {
			t.Fatalf("upstream saw %d requests, want the %d acknowledged", up.total(), len(acked))
		}
	})
}
