package xds

import (
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/misaki-io/misaki/internal/framelog"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

// SaveCache writes s to path as YAML, crash-safely (framelog.WriteFile): a
// crash leaves the old file or the new one, never a mix.
func SaveCache(path string, s *Snapshot) error {
	b, err := yaml.Marshal(s)
	if err != nil {
		return err
	}
	return framelog.WriteFile(path, nil, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// LoadCache reads the config SaveCache kept. A missing file returns nil
// and no error: the proxy has never had a config from the controller.
// The routes are decoded as strictly as the proxy's file, from the parsed
// tree.
func LoadCache(path string) (*Snapshot, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var raw struct {
		Versions  map[string]string   `yaml:"versions"`
		Routes    []yaml.Node         `yaml:"routes"`
		Endpoints map[string][]string `yaml:"endpoints"`
	}
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("xds cache %s: %w", path, err)
	}
	s := &Snapshot{Versions: raw.Versions, Endpoints: raw.Endpoints}
	for i := range raw.Routes {
		r, err := config.DecodeRouteNode(&raw.Routes[i])
		if err != nil {
			return nil, fmt.Errorf("xds cache %s: routes[%d]: %w", path, i, err)
		}
		s.Routes = append(s.Routes, r)
	}
	return s, nil
}
