package server

import (
	"encoding/base64"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// gRPC calls get gRPC answers. A gRPC client reads an HTTP 202 or 503 as
// UNKNOWN or UNAVAILABLE without a reason, and would read a spooled call's
// 202 body as a response message; so for content-type application/grpc the
// proxy's own answers are Trailers-Only responses (HTTP 200, grpc-status
// and grpc-message in the header block that ends the stream), with
// grpc-status-details-bin carrying a google.rpc.Status whose ErrorInfo says
// what happened (reason, domain misaki.io, metadata route and request id).

// gRPC status codes the proxy answers with.
const (
	grpcDeadlineExceeded = 4
	grpcUnavailable      = 14
)

// ErrorInfo reasons, in grpc-status-details-bin.
const (
	grpcReasonNotSent = "HELD_NOT_SENT" // held, and not sent: safe to call again
	grpcReasonSpooled = "SPOOLED"       // accepted for later delivery: do not call again
)

// isGRPC reports whether r is a gRPC call.
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") && (len(ct) == len("application/grpc") || ct[len("application/grpc")] == '+' || ct[len("application/grpc")] == ';')
}

// writeGRPCStatus answers a gRPC call with a Trailers-Only response.
func writeGRPCStatus(w http.ResponseWriter, code int, msg, reason string, meta map[string]string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", grpcPercentEncode(msg))
	h.Set("Grpc-Status-Details-Bin", encodeStatusDetails(code, msg, reason, meta))
	w.WriteHeader(http.StatusOK)
}

// grpcPercentEncode encodes a grpc-message as the gRPC HTTP/2 protocol
// says: printable ASCII except '%' as is, everything else as %XX of its
// UTF-8 bytes.
func grpcPercentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
	}
	return b.String()
}

// encodeStatusDetails returns the unpadded base64 of a google.rpc.Status
// holding one google.rpc.ErrorInfo, as grpc-status-details-bin carries it.
// The two messages are small and fixed, so they are written with protowire
// rather than importing the generated types into the sidecar.
func encodeStatusDetails(code int, msg, reason string, meta map[string]string) string {
	var info []byte // google.rpc.ErrorInfo
	info = protowire.AppendTag(info, 1, protowire.BytesType)
	info = protowire.AppendString(info, reason)
	info = protowire.AppendTag(info, 2, protowire.BytesType)
	info = protowire.AppendString(info, "misaki.io")
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendString(e, meta[k])
		info = protowire.AppendTag(info, 3, protowire.BytesType)
		info = protowire.AppendBytes(info, e)
	}
	var anyMsg []byte // google.protobuf.Any
	anyMsg = protowire.AppendTag(anyMsg, 1, protowire.BytesType)
	anyMsg = protowire.AppendString(anyMsg, "type.googleapis.com/google.rpc.ErrorInfo")
	anyMsg = protowire.AppendTag(anyMsg, 2, protowire.BytesType)
	anyMsg = protowire.AppendBytes(anyMsg, info)
	var st []byte // google.rpc.Status
	st = protowire.AppendTag(st, 1, protowire.VarintType)
	st = protowire.AppendVarint(st, uint64(code))
	st = protowire.AppendTag(st, 2, protowire.BytesType)
	st = protowire.AppendString(st, msg)
	st = protowire.AppendTag(st, 3, protowire.BytesType)
	st = protowire.AppendBytes(st, anyMsg)
	return base64.RawStdEncoding.EncodeToString(st)
}

// grpcTimeout parses a grpc-timeout value (1 to 8 digits and a unit).
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// formatGRPCTimeout writes d as a grpc-timeout value in the finest unit
// that fits in 8 digits.
func formatGRPCTimeout(d time.Duration) string {
	for _, u := range []struct {
		d time.Duration
		c string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}, {time.Hour, "H"}} {
		if n := d / u.d; n < 1e8 {
			return strconv.FormatInt(int64(n), 10) + u.c
		}
	}
	return "99999999H"
}

// shortenGRPCTimeout takes the time a call spent in the proxy off its
// grpc-timeout, so the upstream works to the deadline the app set. It
// reports false when none is left.
func shortenGRPCTimeout(h http.Header, spent time.Duration) bool {
	v := h.Get("Grpc-Timeout")
	if v == "" {
		return true
	}
	d, ok := grpcTimeout(v)
	if !ok {
		return true // not ours to judge; the upstream will refuse it
	}
	left := d - spent
	if left <= 0 {
		return false
	}
	h.Set("Grpc-Timeout", formatGRPCTimeout(left))
	return true
}
