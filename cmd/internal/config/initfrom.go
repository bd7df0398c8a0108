package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml"

	"qat/checkpoint"
)

// modelFromInit takes the architecture of a fine-tune from init_from's
// config.json (a Hugging Face model directory, a checkpoint or a run
// directory), as torchtune takes it from the checkpoint: the model
// section may be left out. Keys the section (or a --set model.KEY) does
// give must agree with the checkpoint, except max_seq, which may be lower
// (a shorter training context needs smaller RoPE tables and changes no
// weight). given are the keys set, by their YAML names.
func (c *Config) modelFromInit(given map[string]bool) *fieldError {
	dir, err := initDir(c.InitFrom)
	if err != nil {
		return &fieldError{"init_from", err.Error()}
	}
	hf, err := checkpoint.HFConfig(dir)
	if err != nil {
		return &fieldError{"init_from", err.Error()}
	}
	path := filepath.Join(dir, "config.json")
	want := reflect.ValueOf(hf)
	have := reflect.ValueOf(&c.Model).Elem()
	t := want.Type()
	for i := 0; i < t.NumField(); i++ {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if !given[key] {
			have.Field(i).Set(want.Field(i))
			continue
		}
		if key == "max_seq" && c.Model.MaxSeq <= hf.MaxSeq {
			continue
		}
		if !reflect.DeepEqual(have.Field(i).Interface(), want.Field(i).Interface()) {
			msg := fmt.Sprintf("%v, but init_from's %s has %v", have.Field(i).Interface(), path, want.Field(i).Interface())
			if key == "max_seq" {
				msg += " (max_seq may be lower, not higher)"
			}
			return &fieldError{"model." + key, msg + ": leave model." + key + " out to take the checkpoint's"}
		}
	}
	return nil
}

// initDir is the directory whose config.json describes init_from's
// model: init_from itself (a Hugging Face directory or a checkpoint), or
// a run directory's latest checkpoint.
func initDir(p string) (string, error) {
	if _, err := os.Stat(filepath.Join(p, "config.json")); err == nil {
		return p, nil
	}
	return checkpoint.Resolve(p)
}

// modelKeys returns the keys the YAML's model section and the --set
// overrides give, by their YAML names.
// trainKeyGiven says whether the train section or an override sets key.
func trainKeyGiven(b []byte, overrides []string, key string) bool {
	var raw struct {
		Train map[string]any `yaml:"train"`
	}
	if yaml.Unmarshal(b, &raw) == nil {
		if _, ok := raw.Train[key]; ok {
			return true
		}
	}
	for _, o := range overrides {
		if k, _, _ := strings.Cut(o, "="); strings.TrimSpace(k) == "train."+key {
			return true
		}
	}
	return false
}

func modelKeys(b []byte, overrides []string) map[string]bool {
	var raw struct {
		Model map[string]any `yaml:"model"`
	}
	given := map[string]bool{}
	if yaml.Unmarshal(b, &raw) == nil {
		for k := range raw.Model {
			given[k] = true
		}
	}
	for _, o := range overrides {
		k, _, _ := strings.Cut(o, "=")
		if rest, ok := strings.CutPrefix(strings.TrimSpace(k), "model."); ok {
			k, _, _ := strings.Cut(rest, ".")
			given[k] = true
		}
	}
	return given
}
