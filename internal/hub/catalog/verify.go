package catalog

import "fmt"

// VerifyPinned checks that a fetched archive is the one a deployment pinned
// (store.GetPin's digest) for source src, chart name and version. An empty
// pinned digest means the version is not pinned yet, and anything goes. A
// difference is an error wrapping ErrDigestMismatch that names both
// digests: the source changed a published version's bytes, and the hub
// refuses the new ones.
func VerifyPinned(a *Archive, src, name, version, pinned string) error {
	if a == nil {
		return fmt.Errorf("chart %s %s from source %s: no archive to verify", name, version, src)
	}
	if pinned == "" || a.Digest == pinned {
		return nil
	}
	return fmt.Errorf("chart %s %s from source %s: source now serves %s, pinned %s: %w",
		name, version, src, a.Digest, pinned, ErrDigestMismatch)
}
