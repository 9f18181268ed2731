package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written in YAML as a Go duration string
// ("30s", "1m30s", "500ms").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// ParseDuration parses a Go duration string: "30s", "1m30s", "500ms".
func ParseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.Atoi(s); nerr == nil && s != "0" {
			return 0, fmt.Errorf("%q has no unit; write it like %ss", s, s)
		}
		return 0, fmt.Errorf("%q is not a duration; write it like 30s, 1m30s or 500ms", s)
	}
	return Duration(v), nil
}

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration like 30s, got a %s", n.Line, kindName(n.Kind))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML writes the duration string without zero minutes and
// seconds after a larger unit: "48h", "2m", "1h30m", "1m30s".
func (d Duration) MarshalYAML() (any, error) {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s, nil
}

// MarshalText lets JSON show durations as strings.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ByteSize is a size in bytes, written as a plain number or with a unit
// (KiB, MiB, GiB, KB, MB, GB).
type ByteSize int64

type byteUnit struct {
	suffix string
	mult   int64
}

// binaryUnits are the units MarshalYAML writes, smallest first.
var binaryUnits = []byteUnit{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}}

// byteUnits are the units ParseByteSize reads, in the order it tries them.
var byteUnits = append(binaryUnits[:3:3], byteUnit{"KB", 1e3}, byteUnit{"MB", 1e6}, byteUnit{"GB", 1e9}, byteUnit{"B", 1})

// ParseByteSize parses "64KiB", "10MB" or "1024".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size; write it like 1048576, 64KiB or 16MiB", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML parses a size.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a size like 64KiB, got a %s", n.Line, kindName(n.Kind))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML writes the size with the largest binary unit that divides
// it ("64MiB", "1536KiB"), or in bytes ("1000"); ParseByteSize reads it
// back exactly.
func (b ByteSize) MarshalYAML() (any, error) {
	for i := len(binaryUnits) - 1; i >= 0; i-- {
		u := binaryUnits[i]
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix, nil
		}
	}
	return strconv.FormatInt(int64(b), 10), nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "value"
	}
}
