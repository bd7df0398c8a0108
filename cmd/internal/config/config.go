// Package config reads qat's YAML run configurations strictly: an unknown
// key, a wrong type or an impossible value is an error naming the file, the
// line and the field.
package config

import (
	"errors"
	"fmt"
	"os"

	"github.com/goccy/go-yaml"

	"qat/layers"
)

// Train holds the batch geometry.
type Train struct {
	Batch int `yaml:"batch"`
	Seq   int `yaml:"seq"`
}

// Config is a run configuration.
type Config struct {
	Model layers.Config `yaml:"model"`
	Train Train         `yaml:"train"`
}

// InputError marks errors caused by the user's files or flags (exit
// status 2 from the CLI).
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// IsInput reports whether err is an InputError.
func IsInput(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

// Parse decodes and validates b; name is used in messages.
func Parse(name string, b []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalWithOptions(b, &c, yaml.Strict()); err != nil {
		return nil, &InputError{fmt.Errorf("%s: %s", name, yaml.FormatError(err, false, true))}
	}
	if err := c.Model.Validate(); err != nil {
		return nil, &InputError{fmt.Errorf("%s: %w", name, err)}
	}
	switch {
	case c.Train.Batch <= 0:
		return nil, &InputError{fmt.Errorf("%s: train.batch: %d, must be positive", name, c.Train.Batch)}
	case c.Train.Seq <= 0 || c.Train.Seq > c.Model.MaxSeq:
		return nil, &InputError{fmt.Errorf("%s: train.seq: %d, must be in [1, model.max_seq = %d]", name, c.Train.Seq, c.Model.MaxSeq)}
	}
	return &c, nil
}

// Load reads and parses a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &InputError{err}
	}
	return Parse(path, b)
}
