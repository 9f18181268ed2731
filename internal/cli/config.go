package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Config is the CLI's config file: the hub's URL, an operator token and
// the CA that signed the hub's certificate. The hub writes one to
// <data-dir>/misaki.yaml on first start (internal/hub's CLIConfig), so
//
//	cp <data-dir>/misaki.yaml ~/.config/misaki/config.yaml
//
// is all the setup a new hub needs.
type Config struct {
	Hub   string `json:"hub"`
	Token string `json:"token"`
	// CAFile is a PEM file; a relative path is relative to the config
	// file's directory. Empty: the system's roots.
	CAFile string `json:"caFile,omitempty"`
}

// configPath is the config file to read and whether the user named it
// (then it must exist): --config, else $MISAKI_CONFIG, else
// $XDG_CONFIG_HOME/misaki/config.yaml, else ~/.config/misaki/config.yaml.
func (e *env) configPath() (path string, named bool) {
	if e.g.config != "" {
		return e.g.config, true
	}
	if p := e.getenv("MISAKI_CONFIG"); p != "" {
		return p, true
	}
	dir := e.getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := e.getenv("HOME")
		if home == "" {
			return "", false
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "misaki", "config.yaml"), false
}

// loadConfig reads the config file, if there is one.
func loadConfig(path string, named bool) (Config, error) {
	var c Config
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !named {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config file: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return c, fmt.Errorf("config file %s: %w (want hub, token and caFile)", path, err)
	}
	if c.CAFile != "" && !filepath.IsAbs(c.CAFile) {
		c.CAFile = filepath.Join(filepath.Dir(path), c.CAFile)
	}
	return c, nil
}

// resolve is the configuration in effect: each flag given overrides the
// config file's field.
func (e *env) resolve() (Config, error) {
	path, named := e.configPath()
	c, err := loadConfig(path, named)
	if err != nil {
		return c, err
	}
	if e.g.hub != "" {
		c.Hub = e.g.hub
	}
	if e.g.token != "" {
		c.Token = e.g.token
	}
	if e.g.caFile != "" {
		c.CAFile = e.g.caFile
	}
	if c.Hub == "" {
		where := "~/.config/misaki/config.yaml"
		if path != "" {
			where = path
		}
		return c, fmt.Errorf("no hub configured: pass --hub https://<host>:8443 and --token, or write %s "+
			"(the hub writes one to <data-dir>/misaki.yaml on first start: copy it there, or point MISAKI_CONFIG or --config at it)", where)
	}
	if !strings.Contains(c.Hub, "://") {
		c.Hub = "https://" + c.Hub
	}
	c.Hub = strings.TrimRight(c.Hub, "/")
	return c, nil
}
