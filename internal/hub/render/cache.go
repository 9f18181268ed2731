package render

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/singleflight"
)

// DefaultCacheSize is the number of renders a Cache keeps when NewCache is
// given a size below 1.
const DefaultCacheSize = 512

// Cache memoizes Render. The key is a SHA-256 over the chart digest, the
// release, the namespace, the canonical JSON of the value layers (object
// keys sorted, as encoding/json writes maps), the Kubernetes version and
// the sorted, deduplicated API versions: everything a render depends on,
// and nothing else (so vehicles whose facts differ only in CRDs or arch
// share an entry). It keeps the most recently used renders up to its
// size. Concurrent misses for one key render once; the other callers wait
// for that render and share its result.
//
// The *Output a Cache returns is shared by every caller of the same key
// and must not be modified; use Output.DeepCopyObjects to get objects to
// change. Errors are not cached: the next call for the key renders again.
//
// A Cache is safe for concurrent use.
type Cache struct {
	size    int
	flights singleflight.Group
	hits    atomic.Uint64
	misses  atomic.Uint64

	mu      sync.Mutex // guards the fields below
	lru     *list.List // of *entry, most recently used first
	entries map[[sha256.Size]byte]*list.Element
}

type entry struct {
	key [sha256.Size]byte
	out *Output
}

// NewCache returns an empty cache that keeps at most size renders
// (DefaultCacheSize if size < 1). It does no I/O.
func NewCache(size int) *Cache {
	if size < 1 {
		size = DefaultCacheSize
	}
	return &Cache{size: size, lru: list.New(), entries: make(map[[sha256.Size]byte]*list.Element)}
}

// Render answers Render(in) from the cache, or renders and keeps the
// result. An empty in.Digest is computed from in.Chart. A cached answer
// is not re-checked against in.Chart: the digest stands for the bytes.
func (c *Cache) Render(in Input) (*Output, error) {
	if in.Digest == "" {
		in.Digest = Digest(in.Chart)
	}
	key, err := cacheKey(in)
	if err != nil {
		return nil, err
	}
	if out := c.get(key); out != nil {
		c.hits.Add(1)
		return out, nil
	}
	rendered := false
	v, err, _ := c.flights.Do(string(key[:]), func() (any, error) {
		// A render for this key may have finished between get and Do.
		if out := c.get(key); out != nil {
			return out, nil
		}
		rendered = true
		c.misses.Add(1)
		out, err := Render(in)
		if err != nil {
			return nil, err
		}
		c.add(key, out)
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	if !rendered {
		c.hits.Add(1)
	}
	return v.(*Output), nil
}

// Stats returns how many calls were answered without a render of their
// own (from the cache, or by sharing a concurrent call's render) and how
// many renders the cache performed (failed ones included). A call that
// shared a concurrent call's failed render counts as neither.
func (c *Cache) Stats() (hits, misses uint64) {
	return c.hits.Load(), c.misses.Load()
}

// Len returns the number of renders the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

func (c *Cache) get(key [sha256.Size]byte) *Output {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*entry).out
}

func (c *Cache) add(key [sha256.Size]byte, out *Output) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		e.Value.(*entry).out = out
		c.lru.MoveToFront(e)
		return
	}
	c.entries[key] = c.lru.PushFront(&entry{key: key, out: out})
	for c.lru.Len() > c.size {
		last := c.lru.Back()
		c.lru.Remove(last)
		delete(c.entries, last.Value.(*entry).key)
	}
}

// cacheKey hashes what a render depends on. Each part is length-prefixed
// so that no two different inputs give the same byte stream.
func cacheKey(in Input) ([sha256.Size]byte, error) {
	var key [sha256.Size]byte
	// Empty layers change nothing, so they are left out of the key.
	nonEmpty := make([]map[string]any, 0, len(in.Layers))
	for _, l := range in.Layers {
		if len(l) > 0 {
			nonEmpty = append(nonEmpty, l)
		}
	}
	layers, err := json.Marshal(nonEmpty)
	if err != nil {
		return key, fmt.Errorf("render: cache key: Input.Layers are not JSON: %w", err)
	}
	// Spellings that render alike key alike: "" is the default namespace,
	// and "1.37.2" is "v1.37.2" (the SDK's ParseKubeVersion adds the v; a
	// version that does not parse never reaches the cache).
	ns := in.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	kv := in.Facts.KubernetesVersion
	if kv != "" && !strings.HasPrefix(kv, "v") {
		kv = "v" + kv
	}
	versions := sortedSet(in.Facts.APIVersions)

	h := sha256.New()
	n := func(i int) {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		h.Write(b[:])
	}
	part := func(s string) { n(len(s)); h.Write([]byte(s)) }
	part(in.Digest)
	part(in.Release)
	part(ns)
	part(string(layers))
	part(kv)
	n(len(versions))
	for _, v := range versions {
		part(v)
	}
	h.Sum(key[:0])
	return key, nil
}
