package trust

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/misaki-io/misaki/internal/durable"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// DefaultRootExpiry is how long a root version is valid when Init's options
// do not say, and how long every root version Rotate makes is valid.
// Rotating any key renews the root's expiry; rotate at least this often.
const DefaultRootExpiry = 365 * 24 * time.Hour

// ErrUnknownRootVersion is returned by Keys.RootVersion for a version that
// does not exist (the API answers 404).
var ErrUnknownRootVersion = errors.New("trust: no such root version")

// The key directory (Init, LoadKeys, Rotate):
//
//	dir/root/<n>.root.json    every root version, kept forever (agents walk the chain)
//	dir/keys/<role>-<keyid>.pem  private keys of the newest root's roles (0600)
//	dir/retired/               private keys rotated out
//
// The root role's private keys may be absent from dir/keys (an offline
// root): the hub signs with the targets keys only, and Rotate runs where the
// root keys are.
const (
	rootDir    = "root"
	keysDir    = "keys"
	retiredDir = "retired"
	rootSuffix = ".root.json"
)

// InitOptions shape the first root. The zero value means one root key and
// one targets key, each role with threshold 1, and DefaultRootExpiry.
type InitOptions struct {
	RootKeys, RootThreshold       int
	TargetsKeys, TargetsThreshold int
	RootExpiry                    time.Duration
}

func (o *InitOptions) defaults() error {
	for _, p := range []*int{&o.RootKeys, &o.RootThreshold, &o.TargetsKeys, &o.TargetsThreshold} {
		if *p == 0 {
			*p = 1
		}
	}
	if o.RootExpiry == 0 {
		o.RootExpiry = DefaultRootExpiry
	}
	switch {
	case o.RootKeys < 1 || o.RootThreshold < 1 || o.RootThreshold > o.RootKeys:
		return fmt.Errorf("root role: threshold %d of %d keys; want 1 <= threshold <= keys", o.RootThreshold, o.RootKeys)
	case o.TargetsKeys < 1 || o.TargetsThreshold < 1 || o.TargetsThreshold > o.TargetsKeys:
		return fmt.Errorf("targets role: threshold %d of %d keys; want 1 <= threshold <= keys", o.TargetsThreshold, o.TargetsKeys)
	case o.RootExpiry < 0:
		return fmt.Errorf("root expiry %s is negative", o.RootExpiry)
	}
	return nil
}

// Init creates the key directory with root version 1, unless dir already
// has a root (then it does nothing). Root 1 has new Ed25519 keys for the
// root and targets roles. TUF requires snapshot and timestamp roles in every
// root; they get the targets keys and threshold, and are unused: there is no
// snapshot or timestamp metadata, because each document is itself the one
// signed, versioned, expiring object per vehicle half.
func Init(dir string, now time.Time, opts InitOptions) error {
	if err := opts.defaults(); err != nil {
		return fmt.Errorf("trust: init %s: %w", dir, err)
	}
	if vs, err := rootVersions(dir); err != nil {
		return fmt.Errorf("trust: init %s: %w", dir, err)
	} else if len(vs) > 0 {
		return nil
	}
	for _, d := range []string{dir, filepath.Join(dir, rootDir), filepath.Join(dir, keysDir), filepath.Join(dir, retiredDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("trust: init: %w", err)
		}
	}
	md := metadata.Root(rootExpiry(now, opts.RootExpiry))
	md.Signed.ConsistentSnapshot = false // no repository: nothing is fetched by hash
	md.Signed.Roles[metadata.ROOT].Threshold = opts.RootThreshold
	var created []string
	fail := func(err error) error {
		for _, p := range created {
			os.Remove(p)
		}
		return fmt.Errorf("trust: init %s: %w", dir, err)
	}
	var rootSigners []Signer
	for range opts.RootKeys {
		s, err := newRoleKey(dir, md, RoleRoot)
		if err != nil {
			return fail(err)
		}
		created = append(created, s.Path())
		rootSigners = append(rootSigners, s)
	}
	for range opts.TargetsKeys {
		s, err := newRoleKey(dir, md, RoleTargets)
		if err != nil {
			return fail(err)
		}
		created = append(created, s.Path())
	}
	setRoleThreshold(md, RoleTargets, opts.TargetsThreshold)
	if err := signRoot(context.Background(), md, rootSigners); err != nil {
		return fail(err)
	}
	b, err := md.ToBytes(true)
	if err != nil {
		return fail(err)
	}
	if _, err := NewVerifier(b, now); err != nil { // what we wrote must be what an agent accepts
		return fail(err)
	}
	if err := durable.WriteNew(rootPath(dir, 1), b, 0o644); err != nil {
		if errors.Is(err, os.ErrExist) {
			// Another Init won the race; its root stands, our keys go.
			for _, p := range created {
				os.Remove(p)
			}
			return nil
		}
		return fail(err)
	}
	return nil
}

// rootExpiry is now+d in UTC to the second, as TUF writes times.
func rootExpiry(now time.Time, d time.Duration) time.Time {
	return now.UTC().Truncate(time.Second).Add(d)
}

// newRoleKey makes a key for role, writes it to dir/keys and adds it to the
// root; a targets key goes to the snapshot and timestamp roles as well.
func newRoleKey(dir string, md *rootMeta, role string) (*FileSigner, error) {
	s, err := generateKey()
	if err != nil {
		return nil, err
	}
	if err := s.write(keyPath(dir, keysDir, role, s.KeyID())); err != nil {
		return nil, err
	}
	key, err := metadata.KeyFromPublicKey(s.Public())
	if err != nil {
		return nil, err
	}
	for _, r := range rolesFor(role) {
		if err := md.Signed.AddKey(key, r); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// rolesFor is the roles a key made for role goes into.
func rolesFor(role string) []string {
	if role == RoleTargets {
		return []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}
	}
	return []string{role}
}

func setRoleThreshold(md *rootMeta, role string, t int) {
	for _, r := range rolesFor(role) {
		md.Signed.Roles[r].Threshold = t
	}
}

func rootPath(dir string, n int64) string {
	return filepath.Join(dir, rootDir, strconv.FormatInt(n, 10)+rootSuffix)
}

func keyPath(dir, sub, role, keyID string) string {
	return filepath.Join(dir, sub, role+"-"+keyID+".pem")
}

// rootVersions lists the root versions in dir/root, ascending; none if the
// directory does not exist.
func rootVersions(dir string) ([]int64, error) {
	ents, err := os.ReadDir(filepath.Join(dir, rootDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var vs []int64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), rootSuffix)
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		n, err := strconv.ParseInt(name, 10, 64)
		if err != nil || n < 1 || strconv.FormatInt(n, 10) != name {
			return nil, fmt.Errorf("%s: not <version>%s", filepath.Join(dir, rootDir, e.Name()), rootSuffix)
		}
		vs = append(vs, n)
	}
	slices.Sort(vs)
	return vs, nil
}

// readChain reads every root version in dir and checks the chain from 1 to
// the newest, as an agent pinned at version 1 would walk it.
func readChain(dir string) ([][]byte, *trusted, error) {
	vs, err := rootVersions(dir)
	if err != nil {
		return nil, nil, err
	}
	if len(vs) == 0 {
		return nil, nil, fmt.Errorf("no root in %s (run Init, or misaki-hub keys init)", filepath.Join(dir, rootDir))
	}
	roots := make([][]byte, len(vs))
	for i, n := range vs {
		if n != int64(i+1) {
			return nil, nil, fmt.Errorf("root versions in %s skip from %d to %d", filepath.Join(dir, rootDir), i, n)
		}
		if roots[i], err = os.ReadFile(rootPath(dir, n)); err != nil {
			return nil, nil, err
		}
	}
	t, err := verifyChain(roots)
	return roots, t, err
}

// verifyChain checks that roots[i] is version i+1 and that each follows
// the one before by TUF's rules; it returns the newest.
func verifyChain(roots [][]byte) (*trusted, error) {
	if len(roots) == 0 {
		return nil, errors.New("no root versions")
	}
	v, err := NewVerifier(roots[0], time.Time{})
	if err != nil {
		return nil, fmt.Errorf("root version 1: %w", err)
	}
	if n, _ := v.Root(); n != 1 {
		return nil, fmt.Errorf("first root is version %d, want 1", n)
	}
	for i, r := range roots[1:] {
		if err := v.UpdateRoot(r, time.Time{}); err != nil {
			return nil, fmt.Errorf("root version %d: %w", i+2, err)
		}
	}
	return v.current(), nil
}

// Keys signs desired states on the hub: the root chain it serves to agents
// and the targets role's signers. Keys is safe for concurrent use; after a
// rotation, load a new Keys.
type Keys struct {
	roots   [][]byte // roots[i] is version i+1 as stored
	newest  *trusted
	signers []Signer // keys of newest's targets role, at least its threshold
}

// LoadKeys reads the key directory: every root version (the chain from 1 to
// the newest is checked), and the private keys of the newest root's targets
// role from dir/keys. The root role's private keys need not be there.
func LoadKeys(dir string) (*Keys, error) {
	roots, newest, err := readChain(dir)
	if err != nil {
		return nil, fmt.Errorf("trust: load keys from %s: %w", dir, err)
	}
	var signers []Signer
	for _, id := range newest.md.Signed.Roles[metadata.TARGETS].KeyIDs {
		s, err := LoadFileSigner(keyPath(dir, keysDir, RoleTargets, id))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("trust: load keys from %s: %w", dir, err)
		}
		signers = append(signers, s)
	}
	k, err := NewKeys(roots, signers...)
	if err != nil {
		return nil, fmt.Errorf("trust: load keys from %s: %w", dir, err)
	}
	return k, nil
}

// NewKeys is Keys over a root chain (roots[i] is version i+1) and signers
// for the newest root's targets role, from any Signer implementation (a
// KMS). Every signer must be a key of that role, and there must be at least
// the role's threshold of them.
func NewKeys(roots [][]byte, signers ...Signer) (*Keys, error) {
	roots = slices.Clone(roots)
	for i := range roots {
		roots[i] = bytes.Clone(roots[i])
	}
	newest, err := verifyChain(roots)
	if err != nil {
		return nil, fmt.Errorf("trust: keys: %w", err)
	}
	var ids []string
	for _, s := range signers {
		if _, ok := newest.targets[s.KeyID()]; !ok {
			return nil, fmt.Errorf("trust: keys: signer %s is not a targets key of root version %d", s.KeyID(), newest.version)
		}
		if !slices.Contains(ids, s.KeyID()) {
			ids = append(ids, s.KeyID())
		}
	}
	if len(ids) < newest.threshold {
		return nil, fmt.Errorf("trust: keys: %d targets private key(s) for root version %d, threshold is %d", len(ids), newest.version, newest.threshold)
	}
	return &Keys{roots: roots, newest: newest, signers: slices.Clone(signers)}, nil
}

// Root returns the newest root version and its JSON.
func (k *Keys) Root() (version int64, rootJSON []byte) {
	return k.newest.version, bytes.Clone(k.newest.json)
}

// Version is the newest root's version (Root without copying its JSON).
func (k *Keys) Version() int64 { return k.newest.version }

// RootExpires is the newest root's expiry: the hub should warn well before
// it, and rotate (which renews it).
func (k *Keys) RootExpires() time.Time { return k.newest.expires }

// RootVersion returns root version n's JSON, as stored (for GET
// /v1/trust/root/{n}.json). It wraps ErrUnknownRootVersion if there is none.
func (k *Keys) RootVersion(n int64) ([]byte, error) {
	if n < 1 || n > int64(len(k.roots)) {
		return nil, fmt.Errorf("trust: root version %d (newest is %d): %w", n, len(k.roots), ErrUnknownRootVersion)
	}
	return bytes.Clone(k.roots[n-1]), nil
}

// Sign signs s as one DSSE envelope with every targets signer. The result's
// unsigned fields are copied from s, its Digest is of the exact payload
// bytes, and RootVersion is the newest root's. s must name a vehicle and a
// half, have a revision of at least 1, and expire after it is issued; it
// must not be issued after the root expires (no agent would accept it).
func (k *Keys) Sign(ctx context.Context, s hubv1.DesiredState) (hubv1.Desired, error) {
	switch {
	case s.Vehicle == "":
		return hubv1.Desired{}, errors.New("trust: sign: no vehicle")
	case s.Half != hubv1.HalfVehicle && s.Half != hubv1.HalfCloud:
		return hubv1.Desired{}, fmt.Errorf("trust: sign %s: half %q, want %q or %q", s.Vehicle, s.Half, hubv1.HalfVehicle, hubv1.HalfCloud)
	case s.Revision < 1:
		return hubv1.Desired{}, fmt.Errorf("trust: sign %s/%s: revision %d, want >= 1", s.Vehicle, s.Half, s.Revision)
	case !s.Expires.After(s.IssuedAt):
		return hubv1.Desired{}, fmt.Errorf("trust: sign %s/%s revision %d: expires %s is not after issuedAt %s", s.Vehicle, s.Half, s.Revision, s.Expires, s.IssuedAt)
	case s.IssuedAt.After(k.newest.expires):
		return hubv1.Desired{}, fmt.Errorf("trust: sign %s/%s revision %d: root version %d expired at %s; rotate a key to renew it", s.Vehicle, s.Half, s.Revision, k.newest.version, k.newest.expires)
	}
	payload, err := json.Marshal(s)
	if err != nil {
		return hubv1.Desired{}, fmt.Errorf("trust: sign %s/%s revision %d: %w", s.Vehicle, s.Half, s.Revision, err)
	}
	pae := dsse.PAE(hubv1.PayloadTypeDesired, payload)
	sigs := make([]hubv1.Signature, 0, len(k.signers))
	for _, sg := range k.signers {
		sig, err := sg.Sign(ctx, pae)
		if err != nil {
			return hubv1.Desired{}, fmt.Errorf("trust: sign %s/%s revision %d with key %s: %w", s.Vehicle, s.Half, s.Revision, sg.KeyID(), err)
		}
		sigs = append(sigs, hubv1.Signature{KeyID: sg.KeyID(), Sig: sig})
	}
	return hubv1.Desired{
		Vehicle:     s.Vehicle,
		Half:        s.Half,
		Revision:    s.Revision,
		Digest:      Digest(payload),
		IssuedAt:    s.IssuedAt,
		Expires:     s.Expires,
		RootVersion: k.newest.version,
		Envelope:    hubv1.Envelope{PayloadType: hubv1.PayloadTypeDesired, Payload: payload, Signatures: sigs},
	}, nil
}

// Rotate replaces every key of role ("targets" or "root") with a new one
// and writes root version N+1, valid for DefaultRootExpiry from now. Root
// N+1 is signed by the current root keys (at least their threshold must be
// in dir/keys: run Rotate where the root keys are) and, for a root
// rotation, by all the new root keys, so agents accept it by TUF's rules.
// Thresholds stay as they are.
//
// Order of writes, each atomic and synced: the new private keys, then root
// N+1 (never overwriting: a concurrent Rotate fails), then the old keys of
// the role move to dir/retired. A crash leaves at worst unused new keys in
// dir/keys, or rotated-out keys not yet moved; the next Rotate retires any
// key file the newest root does not name. A hub signing with the old Keys
// keeps doing so until it loads the new ones.
func Rotate(dir string, role string, now time.Time) (newVersion int64, err error) {
	if role != RoleTargets && role != RoleRoot {
		return 0, fmt.Errorf("trust: rotate: role %q, want %q or %q", role, RoleTargets, RoleRoot)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("trust: rotate %s key in %s: %w", role, dir, err)
		}
	}()
	_, cur, err := readChain(dir)
	if err != nil {
		return 0, err
	}
	oldRoot := cur.md.Signed.Roles[metadata.ROOT]
	var oldRootSigners []Signer
	for _, id := range oldRoot.KeyIDs {
		s, err := LoadFileSigner(keyPath(dir, keysDir, RoleRoot, id))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		oldRootSigners = append(oldRootSigners, s)
	}
	if len(oldRootSigners) < oldRoot.Threshold {
		return 0, fmt.Errorf("%d of root version %d's root private keys are in %s, %d needed: run this where the root keys are",
			len(oldRootSigners), cur.version, filepath.Join(dir, keysDir), oldRoot.Threshold)
	}

	next, err := (&rootMeta{}).FromBytes(cur.json)
	if err != nil {
		return 0, err
	}
	next.ClearSignatures()
	next.Signed.Version = cur.version + 1
	next.Signed.Expires = rootExpiry(now, DefaultRootExpiry)
	old := slices.Clone(next.Signed.Roles[role].KeyIDs)
	for _, id := range old {
		for _, r := range rolesFor(role) {
			if err := next.Signed.RevokeKey(id, r); err != nil {
				return 0, err
			}
		}
	}
	var newRootSigners []Signer
	for range old {
		s, err := newRoleKey(dir, next, role)
		if err != nil {
			return 0, err
		}
		if role == RoleRoot {
			newRootSigners = append(newRootSigners, s)
		}
	}
	if role == RoleTargets {
		newRootSigners = oldRootSigners // the root keys do not change
	}
	if err := signRoot(context.Background(), next, append(slices.Clone(oldRootSigners), newRootSigners...)); err != nil {
		return 0, err
	}
	b, err := next.ToBytes(true)
	if err != nil {
		return 0, err
	}
	nt, err := parseRoot(b)
	if err != nil {
		return 0, err
	}
	if err := cur.verifyNext(nt); err != nil { // what we write must be what an agent accepts
		return 0, err
	}
	if err := durable.WriteNew(rootPath(dir, nt.version), b, 0o644); err != nil {
		return 0, err
	}
	if err := retireUnused(dir, nt); err != nil {
		return nt.version, fmt.Errorf("root version %d written; %w", nt.version, err)
	}
	return nt.version, nil
}

// retireUnused moves every key file in dir/keys that root t does not name
// to dir/retired.
func retireUnused(dir string, t *trusted) error {
	ents, err := os.ReadDir(filepath.Join(dir, keysDir))
	if err != nil {
		return err
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".pem")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		role, id, ok := strings.Cut(name, "-")
		if !ok || (role != RoleRoot && role != RoleTargets) {
			continue
		}
		if r := t.md.Signed.Roles[role]; r != nil && slices.Contains(r.KeyIDs, id) {
			continue
		}
		if err := moveFile(filepath.Join(dir, keysDir, e.Name()), filepath.Join(dir, retiredDir, e.Name())); err != nil {
			return fmt.Errorf("retire %s: %w", e.Name(), err)
		}
	}
	return nil
}
