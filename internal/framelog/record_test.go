package framelog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRecordFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	if _, err := ReadRecord(path, 1, 1<<10); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := WriteRecord(path, nil, 1, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := WriteRecord(path, nil, 1, []byte("second")); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRecord(path, 1, 1<<10)
	if err != nil || string(got) != "second" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := ReadRecord(path, 2, 1<<10); !errors.Is(err, ErrDamaged) {
		t.Errorf("another frame type: %v", err)
	}
	if _, err := ReadRecord(path, 1, 3); !errors.Is(err, ErrDamaged) {
		t.Errorf("over max: %v", err)
	}
	b, _ := os.ReadFile(path)
	b[len(b)-1] ^= 1
	os.WriteFile(path, b, 0o600)
	if _, err := ReadRecord(path, 1, 1<<10); !errors.Is(err, ErrDamaged) {
		t.Errorf("a flipped bit: %v", err)
	}
}
