package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func mustRotate(t testing.TB, dir, role string, now time.Time, want int64) {
	t.Helper()
	n, err := Rotate(dir, role, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != want {
		t.Fatalf("Rotate made version %d, want %d", n, want)
	}
}

func roleKeyIDs(t testing.TB, rootJSON []byte, role string) []string {
	t.Helper()
	md, err := (&rootMeta{}).FromBytes(rootJSON)
	if err != nil {
		t.Fatal(err)
	}
	return md.Signed.Roles[role].KeyIDs
}

func TestInit(t *testing.T) {
	t.Run("layout and modes", func(t *testing.T) {
		dir := newDir(t, InitOptions{})
		k := mustLoad(t, dir)
		n, root := k.Root()
		if n != 1 {
			t.Fatalf("root version %d", n)
		}
		md, err := (&rootMeta{}).FromBytes(root)
		if err != nil {
			t.Fatal(err)
		}
		s := md.Signed
		if !s.Expires.Equal(t0.Add(DefaultRootExpiry)) {
			t.Errorf("expires %s, want a year after %s", s.Expires, t0)
		}
		targets := s.Roles[RoleTargets].KeyIDs
		for _, r := range []string{"snapshot", "timestamp"} {
			if diff := cmp.Diff(targets, s.Roles[r].KeyIDs); diff != "" {
				t.Errorf("%s role's keys are not the targets keys:\n%s", r, diff)
			}
		}
		want := []string{"root-" + s.Roles[RoleRoot].KeyIDs[0] + ".pem", "targets-" + targets[0] + ".pem"}
		slices.Sort(want)
		if diff := cmp.Diff(want, keyFiles(t, dir, keysDir)); diff != "" {
			t.Errorf("key files (-want +got):\n%s", diff)
		}
		for _, name := range want {
			fi, err := os.Stat(filepath.Join(dir, keysDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %#o, want 0600", name, fi.Mode().Perm())
			}
		}
	})
	t.Run("idempotent", func(t *testing.T) {
		dir := newDir(t, InitOptions{})
		before, _ := os.ReadFile(rootPath(dir, 1))
		keysBefore := keyFiles(t, dir, keysDir)
		if err := Init(dir, t0.Add(time.Hour), InitOptions{RootKeys: 3, RootThreshold: 2}); err != nil {
			t.Fatal(err)
		}
		after, _ := os.ReadFile(rootPath(dir, 1))
		if !bytes.Equal(before, after) {
			t.Error("second Init changed root 1")
		}
		if diff := cmp.Diff(keysBefore, keyFiles(t, dir, keysDir)); diff != "" {
			t.Errorf("second Init changed the keys:\n%s", diff)
		}
		if vs, _ := rootVersions(dir); len(vs) != 1 {
			t.Errorf("root versions %v", vs)
		}
	})
	t.Run("thresholds", func(t *testing.T) {
		dir := newDir(t, InitOptions{RootKeys: 3, RootThreshold: 2, TargetsKeys: 2, TargetsThreshold: 2, RootExpiry: 30 * 24 * time.Hour})
		k := mustLoad(t, dir)
		_, root := k.Root()
		md, _ := (&rootMeta{}).FromBytes(root)
		got := map[string][2]int{}
		for name, r := range md.Signed.Roles {
			got[name] = [2]int{len(r.KeyIDs), r.Threshold}
		}
		want := map[string][2]int{"root": {3, 2}, "targets": {2, 2}, "snapshot": {2, 2}, "timestamp": {2, 2}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("roles' (keys, threshold) (-want +got):\n%s", diff)
		}
		if !k.RootExpires().Equal(t0.Add(30 * 24 * time.Hour)) {
			t.Errorf("root expires %s", k.RootExpires())
		}
		if len(md.Signatures) != 3 {
			t.Errorf("root 1 has %d signatures, want all 3 root keys", len(md.Signatures))
		}
	})
	for _, tc := range []struct {
		name string
		opts InitOptions
	}{
		{"root threshold above keys", InitOptions{RootKeys: 1, RootThreshold: 2}},
		{"negative targets keys", InitOptions{TargetsKeys: -1}},
		{"negative expiry", InitOptions{RootExpiry: -time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := Init(dir, t0, tc.opts); err == nil {
				t.Fatal("accepted")
			}
			if vs, _ := rootVersions(dir); len(vs) != 0 {
				t.Errorf("wrote roots %v", vs)
			}
		})
	}
}

func TestLoadKeys(t *testing.T) {
	t.Run("without the root private key still signs", func(t *testing.T) {
		dir := newDir(t, InitOptions{})
		offline := t.TempDir()
		moveRootKeys(t, filepath.Join(dir, keysDir), offline)
		k := mustLoad(t, dir)
		d := mustSign(t, k, state(1))
		if _, err := mustVerifier(t, rootOf(t, k, 1)).Verify(d, want1, t0); err != nil {
			t.Fatal(err)
		}
		_, err := Rotate(dir, RoleTargets, t0)
		if err == nil || !strings.Contains(err.Error(), "run this where the root keys are") {
			t.Fatalf("Rotate without root keys: %v", err)
		}
		if vs, _ := rootVersions(dir); len(vs) != 1 {
			t.Fatalf("failed Rotate wrote roots %v", vs)
		}
		// Where the root key is (here: put back), Rotate works.
		moveRootKeys(t, offline, filepath.Join(dir, keysDir))
		mustRotate(t, dir, RoleTargets, t0, 2)
	})
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   string
	}{
		{"no directory", func(t *testing.T, dir string) { os.RemoveAll(dir) }, "no root"},
		{"no targets key", func(t *testing.T, dir string) {
			for _, n := range keyFiles(t, dir, keysDir) {
				if strings.HasPrefix(n, "targets-") {
					os.Remove(filepath.Join(dir, keysDir, n))
				}
			}
		}, "0 targets private key(s)"},
		{"key readable by others", func(t *testing.T, dir string) {
			for _, n := range keyFiles(t, dir, keysDir) {
				if strings.HasPrefix(n, "targets-") {
					os.Chmod(filepath.Join(dir, keysDir, n), 0o644)
				}
			}
		}, "chmod 600"},
		{"key writable by the group", func(t *testing.T, dir string) {
			for _, n := range keyFiles(t, dir, keysDir) {
				if strings.HasPrefix(n, "targets-") {
					os.Chmod(filepath.Join(dir, keysDir, n), 0o660)
				}
			}
		}, "chmod 600"},
		{"a root version missing", func(t *testing.T, dir string) {
			mustRotate(t, dir, RoleTargets, t0, 2)
			mustRotate(t, dir, RoleTargets, t0, 3)
			os.Remove(rootPath(dir, 2))
		}, "skip from 1 to 3"},
		{"a root version forged", func(t *testing.T, dir string) {
			mustRotate(t, dir, RoleTargets, t0, 2)
			b, _ := os.ReadFile(rootPath(dir, 2))
			b = bytes.Replace(b, []byte(`"version": 2`), []byte(`"version": 2, "x": 1`), 1)
			os.Remove(rootPath(dir, 2))
			os.WriteFile(rootPath(dir, 2), b, 0o644)
		}, "root-signature"},
		{"a stray root file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, rootDir, "02.root.json"), []byte("{}"), 0o644)
		}, "not <version>.root.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newDir(t, InitOptions{})
			tc.break_(t, dir)
			_, err := LoadKeys(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("root versions", func(t *testing.T) {
		dir := newDir(t, InitOptions{})
		mustRotate(t, dir, RoleTargets, t0, 2)
		k := mustLoad(t, dir)
		for _, n := range []int64{0, 3, -1} {
			if _, err := k.RootVersion(n); !errors.Is(err, ErrUnknownRootVersion) {
				t.Errorf("RootVersion(%d): %v", n, err)
			}
		}
		for _, n := range []int64{1, 2} {
			b, err := k.RootVersion(n)
			want, _ := os.ReadFile(rootPath(dir, n))
			if err != nil || !bytes.Equal(b, want) {
				t.Errorf("RootVersion(%d) is not the stored file: %v", n, err)
			}
		}
	})
	t.Run("a signer outside the targets role", func(t *testing.T) {
		k := mustLoad(t, newDir(t, InitOptions{}))
		_, err := NewKeys([][]byte{rootOf(t, k, 1)}, newEd25519Signer(t))
		if err == nil || !strings.Contains(err.Error(), "is not a targets key") {
			t.Fatalf("error %v", err)
		}
	})
}

func moveRootKeys(t *testing.T, from, to string) {
	t.Helper()
	ents, _ := os.ReadDir(from)
	moved := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "root-") {
			if err := os.Rename(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
				t.Fatal(err)
			}
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("no root key in %s", from)
	}
}

// TestRotateTargets: after a targets rotation, documents signed with the
// new key verify once the agent has root N+1 and not before; documents
// signed with the old key no longer verify.
func TestRotateTargets(t *testing.T) {
	dir := newDir(t, InitOptions{})
	k1 := mustLoad(t, dir)
	old := mustSign(t, k1, state(1))
	oldKey := k1.signers[0].KeyID()

	mustRotate(t, dir, RoleTargets, t0.Add(time.Hour), 2)
	k2 := mustLoad(t, dir)
	newDoc := mustSign(t, k2, state(2))
	if newDoc.RootVersion != 2 || newDoc.Envelope.Signatures[0].KeyID == oldKey {
		t.Fatalf("new document: root version %d, key %s", newDoc.RootVersion, newDoc.Envelope.Signatures[0].KeyID)
	}

	v := mustVerifier(t, rootOf(t, k1, 1))
	_, err := v.Verify(newDoc, want1, t0.Add(2*time.Hour))
	wantRefusal(t, err, ReasonSignature)
	if !strings.Contains(err.Error(), "the hub has root version 2") {
		t.Errorf("refusal does not say a newer root exists: %v", err)
	}
	if err := v.UpdateRoot(rootOf(t, k2, 2), t0); err != nil {
		t.Fatal(err)
	}
	if n, b := v.Root(); n != 2 || !bytes.Equal(b, rootOf(t, k2, 2)) {
		t.Fatalf("verifier's root is version %d", n)
	}
	if _, err := v.Verify(newDoc, want1, t0.Add(2*time.Hour)); err != nil {
		t.Fatalf("new key after UpdateRoot: %v", err)
	}
	_, err = v.Verify(old, want1, t0.Add(2*time.Hour))
	wantRefusal(t, err, ReasonSignature)

	// The root keys did not change; the old targets key is retired.
	if diff := cmp.Diff(roleKeyIDs(t, rootOf(t, k1, 1), RoleRoot), roleKeyIDs(t, rootOf(t, k2, 2), RoleRoot)); diff != "" {
		t.Errorf("root keys changed in a targets rotation:\n%s", diff)
	}
	if _, err := os.Stat(keyPath(dir, retiredDir, RoleTargets, oldKey)); err != nil {
		t.Errorf("old targets key not in retired/: %v", err)
	}
	if _, err := os.Stat(keyPath(dir, keysDir, RoleTargets, oldKey)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old targets key still in keys/: %v", err)
	}
	// The persisted state round-trips: a verifier made from Root() is the same.
	_, persisted := v.Root()
	if _, err := mustVerifier(t, persisted).Verify(newDoc, want1, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// TestRotateRootChain: root keys rotated twice; an agent pinned at 1 walks
// 1→2→3 and then accepts the hub's documents.
func TestRotateRootChain(t *testing.T) {
	dir := newDir(t, InitOptions{RootKeys: 2, RootThreshold: 2})
	mustRotate(t, dir, RoleRoot, t0.Add(time.Hour), 2)
	mustRotate(t, dir, RoleRoot, t0.Add(2*time.Hour), 3)
	k := mustLoad(t, dir)
	r1, r2, r3 := rootOf(t, k, 1), rootOf(t, k, 2), rootOf(t, k, 3)
	ids := [][]string{roleKeyIDs(t, r1, RoleRoot), roleKeyIDs(t, r2, RoleRoot), roleKeyIDs(t, r3, RoleRoot)}
	for i := range ids {
		if len(ids[i]) != 2 {
			t.Fatalf("root %d has %d root keys", i+1, len(ids[i]))
		}
		for j := range i {
			for _, id := range ids[i] {
				if slices.Contains(ids[j], id) {
					t.Errorf("root %d reuses root key %s of root %d", i+1, id, j+1)
				}
			}
		}
	}
	var wantKeys []string
	for _, id := range ids[2] {
		wantKeys = append(wantKeys, "root-"+id+".pem")
	}
	wantKeys = append(wantKeys, "targets-"+roleKeyIDs(t, r3, RoleTargets)[0]+".pem")
	slices.Sort(wantKeys)
	if diff := cmp.Diff(wantKeys, keyFiles(t, dir, keysDir)); diff != "" {
		t.Errorf("keys/ (-want +got):\n%s", diff)
	}
	if n := len(keyFiles(t, dir, retiredDir)); n != 4 {
		t.Errorf("retired/ has %d keys, want the 4 rotated-out root keys", n)
	}

	v := mustVerifier(t, r1)
	d := mustSign(t, k, state(1))
	for i, r := range [][]byte{r2, r3} {
		if err := v.UpdateRoot(r, t0); err != nil {
			t.Fatalf("UpdateRoot(%d): %v", i+2, err)
		}
	}
	if _, err := v.Verify(d, want1, t0.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Applying a version again, or an older one, is refused.
	wantRefusal(t, v.UpdateRoot(r3, t0), ReasonRootVersion)
	wantRefusal(t, v.UpdateRoot(r2, t0), ReasonRootVersion)
}

// TestUpdateRootRefuses: the TUF rules for root N+1.
func TestUpdateRootRefuses(t *testing.T) {
	dir := newDir(t, InitOptions{})
	mustRotate(t, dir, RoleRoot, t0.Add(time.Hour), 2)
	mustRotate(t, dir, RoleRoot, t0.Add(2*time.Hour), 3)
	k := mustLoad(t, dir)
	r1, r2, r3 := rootOf(t, k, 1), rootOf(t, k, 2), rootOf(t, k, 3)
	oldRootKey := roleKeyIDs(t, r1, RoleRoot)[0]
	newRootKey := roleKeyIDs(t, r2, RoleRoot)[0]

	// signedOnlyBy keeps r2's signatures by keyID only.
	signedOnlyBy := func(keyID string) []byte {
		md, err := (&rootMeta{}).FromBytes(r2)
		if err != nil {
			t.Fatal(err)
		}
		md.Signatures = slices.DeleteFunc(md.Signatures, func(s metadata.Signature) bool { return s.KeyID != keyID })
		if len(md.Signatures) != 1 {
			t.Fatalf("root 2 has no signature by %s", keyID)
		}
		b, _ := md.ToBytes(true)
		return b
	}
	attackerRoot, attackerTargets := newEd25519Signer(t), newEd25519Signer(t)
	for _, tc := range []struct {
		name   string
		next   []byte
		reason Reason
	}{
		{"N+2 skipping N+1", r3, ReasonRootVersion},
		{"N+1 signed only by the new key", signedOnlyBy(newRootKey), ReasonRootSignature},
		{"N+1 signed only by the old key", signedOnlyBy(oldRootKey), ReasonRootSignature},
		{"forged N+1 signed by its own keys", buildRoot(t, rootSpec{
			version: 2, root: []Signer{attackerRoot}, targets: []Signer{attackerTargets}, signers: []Signer{attackerRoot},
		}), ReasonRootSignature},
		{"N+1 with its targets keys swapped", func() []byte {
			var m map[string]any
			json.Unmarshal(r2, &m)
			id := roleKeyIDs(t, r2, RoleTargets)[0]
			keys := m["signed"].(map[string]any)["keys"].(map[string]any)
			ak, _ := metadata.KeyFromPublicKey(attackerTargets.Public())
			keys[id] = ak
			b, _ := json.Marshal(m)
			return b
		}(), ReasonRootSignature},
		{"not JSON", []byte("null"), ReasonRootInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := mustVerifier(t, r1)
			wantRefusal(t, v.UpdateRoot(tc.next, t0), tc.reason)
			if n, b := v.Root(); n != 1 || !bytes.Equal(b, r1) {
				t.Errorf("trusted root changed to version %d", n)
			}
		})
	}
}

// TestRootChainThroughExpiredRoots: an agent off for longer than a root's
// life walks through expired intermediate roots; only the root in force
// when it verifies must be unexpired.
func TestRootChainThroughExpiredRoots(t *testing.T) {
	dir := newDir(t, InitOptions{})
	mustRotate(t, dir, RoleTargets, t0.Add(time.Hour), 2) // expires t0+1y+1h
	later := t0.Add(2 * DefaultRootExpiry)
	mustRotate(t, dir, RoleTargets, later, 3) // expires t0+3y
	k := mustLoad(t, dir)
	s := state(1)
	s.IssuedAt, s.Expires = later, later.Add(24*time.Hour)
	d := mustSign(t, k, s)
	now := later.Add(time.Hour)

	v := mustVerifier(t, rootOf(t, k, 1))
	if err := v.UpdateRoot(rootOf(t, k, 2), now); err != nil {
		t.Fatalf("expired intermediate root refused: %v", err)
	}
	// Signed by a key root 2 does not have.
	_, err := v.Verify(d, want1, now)
	wantRefusal(t, err, ReasonSignature)
	if err := v.UpdateRoot(rootOf(t, k, 3), now); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(d, want1, now); err != nil {
		t.Fatal(err)
	}
	// Had the hub stopped at root 2 and kept its key, the agent would
	// refuse: the root in force has expired (freeze).
	dir2 := newDir(t, InitOptions{})
	mustRotate(t, dir2, RoleTargets, t0.Add(time.Hour), 2)
	k2 := mustLoad(t, dir2)
	s2 := state(1)
	s2.IssuedAt, s2.Expires = t0.Add(2*time.Hour), later.Add(24*time.Hour)
	v2 := mustVerifier(t, rootOf(t, k2, 1))
	if err := v2.UpdateRoot(rootOf(t, k2, 2), now); err != nil {
		t.Fatal(err)
	}
	_, err = v2.Verify(mustSign(t, k2, s2), want1, now)
	wantRefusal(t, err, ReasonRootExpired)
}

// TestRotateRetiresLeftovers: a key file the newest root does not name (left
// by a crash between writing keys and writing the root) is retired by the
// next rotation, and LoadKeys ignores it meanwhile.
func TestRotateRetiresLeftovers(t *testing.T) {
	dir := newDir(t, InitOptions{})
	stray, err := GenerateFileSigner(keyPath(dir, keysDir, RoleTargets, "0000"))
	if err != nil {
		t.Fatal(err)
	}
	k := mustLoad(t, dir)
	if len(k.signers) != 1 || k.signers[0].KeyID() == stray.KeyID() {
		t.Fatal("LoadKeys loaded a key the root does not name")
	}
	mustRotate(t, dir, RoleTargets, t0, 2)
	if _, err := os.Stat(keyPath(dir, retiredDir, RoleTargets, "0000")); err != nil {
		t.Errorf("stray key not retired: %v", err)
	}
	if _, err := Rotate(dir, "snapshot", t0); err == nil {
		t.Error("Rotate accepted role snapshot")
	}
}

// A key as a Kubernetes Secret volume with an fsGroup mounts it (0440)
// loads: that is how hub replicas share the signing key.
func TestLoadKeysFromSecretVolumeMode(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, t0, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range keyFiles(t, dir, keysDir) {
		if err := os.Chmod(filepath.Join(dir, keysDir, n), 0o440); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadKeys(dir); err != nil {
		t.Fatalf("a 0440 key: %v", err)
	}
}
