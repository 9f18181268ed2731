// Package spool is the edge proxy's durable queue: requests that outlived
// their hold window wait here, across crashes and power-offs, until a link
// the route may use returns.
//
// # Where things are
//
//   - spool.go: Options, Stats, the Spool type and its lock, Open, Close,
//     and the read-only queries (Lookup, Attempts, Routes, Stats).
//   - commit.go: the write path. Enqueue appends a request frame and,
//     under SyncAlways, waits for the group commit; Run is the periodic
//     fsync loop.
//   - segment.go: the segment files: create one with its start frame,
//     append, seal a full one, reclaim drained ones, cut the drained active
//     one back, close.
//   - body.go: body files: write one (stageBody), read one checked
//     (OpenBody), remove one once its done frame is durable.
//   - index.go: the in-memory index: a 32-byte entry per live request in
//     per-route FIFO queues, off the heap when large, and the bookkeeping
//     that ends a request (finishLocked, forgetLocked).
//   - deliver.go: the delivery side: Next and NextN (one read for records
//     close together), Finish, FinishAll, Retry, Cancel.
//   - evict.go: what ends requests without delivery: per-route and total
//     quotas with Reject or DropOldest (makeRoomLocked), and TTL expiry
//     (Sweep).
//   - recover.go: Open's scan of the segments: rebuild the index, cut a
//     torn tail, quarantine damage, remove orphaned body files.
//   - record.go: the on-disk encoding of the frames' payloads (request,
//     done, attempt, start).
//
// # On disk
//
// In Options.Dir:
//
//	seg-NNNNNNNN.log   segments, NNNNNNNN the ordinal in hex; the highest is active
//	bodies/            one file per body over InlineMax, named by 32 random hex digits
//	quarantine/        seg-NNNNNNNN-OOOOOOOOOOOO.torn|damaged: bytes recovery cut or skipped, at offset O
//
// A segment is a sequence of framelog frames (12-byte header: magic "MS",
// type, flags, length, CRC-32C; then the payload). Its first frame is a
// start frame holding the next sequence number; after it come request
// frames (a Record), done frames (sequence number and Outcome) and
// attempt frames (sequence number), in the order they happened.
//
// # Design
//
// The spool is an append-only log cut into segment files (seg-NNNNNNNN.log,
// 64 MiB by default), with the index in memory. Each segment is a
// framelog log: framelog writes, fsyncs and recovers the frames, by the
// same rule as the proxy's and the gateway's other logs.
//
//   - Every frame carries a CRC-32C over its type, length and payload. A
//     request is one frame: method, URL, headers, route, priority,
//     enqueue time, expiry, idempotency key, callback, and the body when it
//     is small (64 KiB by default). A larger body (a video segment) is
//     streamed to a file of its own in bodies/, with its length and
//     checksum in the request frame, so no body is ever held in memory
//     whole. Finishing a request (delivered, failed, expired, cancelled,
//     evicted) appends a small done frame; a retry appends an attempt frame.
//   - Enqueue appends under one lock and, under SyncAlways, waits for an
//     fdatasync that covers its frame. One waiter runs it for everyone
//     appended so far: concurrent enqueues share one fsync (group commit,
//     framelog's Sync). Under SyncInterval a loop (Run) fsyncs periodically
//     instead. A failed write is cut back and a failed fsync fails every
//     enqueue it covered: neither is acknowledged.
//   - Open reads the segments in order and rebuilds the index: per route, a
//     FIFO of 32-byte entries with no pointers (a million spooled requests
//     cost 32 MB of index). A large queue's entries live in anonymous memory
//     mapped outside the Go heap: on the heap, the collector would let the
//     heap grow by as much again in garbage before collecting, and a
//     million spooled requests held 134 MiB of RSS; off it, 48 MiB
//     (bench/spoolbench BenchmarkMillion). A frame cut short at the end of the newest
//     segment is a write the crash interrupted: it is copied to quarantine/
//     and cut off. A damaged frame elsewhere is found by its checksum,
//     copied to quarantine/, counted, and skipped: the scan resumes at the
//     next frame whose magic and checksum are good, and every intact frame
//     after the damage is kept (framelog's one recovery rule).
//   - A sealed segment is removed once no live request is in it, oldest
//     first. A done frame may sit in a later segment than its request. So
//     an earlier segment is always gone before a later one, and a done frame
//     never outlives its request's segment. When the whole spool is
//     drained, the active segment is cut back in place. That frees the
//     space on a full disk too, where creating a file would fail.
//
// Why not bbolt (metadata) plus body files: a bbolt commit rewrites the
// B+tree pages it touches and fsyncs twice (data, then meta page). A spooled
// request is written once and read once, in order, and an append-only log
// makes it one sequential write per request and one fdatasync per group.
// The target is at least 80% of the disk's raw group-commit rate,
// and that needs the log. The cost is this package's recovery code, which
// the torn-tail, bit-flip and crash tests cover.
//
// # Guarantees
//
// Under SyncAlways, a request for which Enqueue returned nil is on disk.
// Only damage to the disk itself can lose it, and then it is counted and
// quarantined, not dropped silently. Under SyncInterval, a crash of the
// process loses nothing: the data is in the page cache. A power loss or
// kernel crash loses at most the last interval's requests. Delivery is at
// least once: a done frame lost in a crash means the request is sent again,
// with the same Idempotency-Key, and the cloud gateway answers the repeat
// from its store.
//
// What it costs (docs/benchmarks.md, "Durable enqueue", on the benchmark
// VM): 64 clients' 1 KiB POSTs were answered 202 by the proxy at 20,234
// requests/s under SyncAlways, 21–26 requests sharing each fsync, and at
// 30,137/s under SyncInterval; the disk's raw group-commit limit there
// was 71,770/s.
package spool
