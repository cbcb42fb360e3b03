package firecracker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/goccy/go-yaml"
)

// A small Swagger 2.0 validator for the Firecracker API description: just
// what the driver's requests need (paths with {params}, body parameters,
// $ref, object/string/integer/boolean/array, required, enum, minimum,
// maximum). It is stricter than Swagger on one point on purpose: a property
// the definition does not name is an error, because Firecracker's serde
// types reject unknown fields.

type swaggerDoc struct {
	Swagger     string                          `yaml:"swagger"`
	Paths       map[string]map[string]operation `yaml:"paths"`
	Definitions map[string]*schema              `yaml:"definitions"`
}

type operation struct {
	Parameters []parameter `yaml:"parameters"`
}

type parameter struct {
	Name     string  `yaml:"name"`
	In       string  `yaml:"in"`
	Required bool    `yaml:"required"`
	Type     string  `yaml:"type"`
	Schema   *schema `yaml:"schema"`
}

type schema struct {
	Ref        string             `yaml:"$ref"`
	Type       string             `yaml:"type"`
	Required   []string           `yaml:"required"`
	Properties map[string]*schema `yaml:"properties"`
	Items      *schema            `yaml:"items"`
	Enum       []any              `yaml:"enum"`
	Minimum    *float64           `yaml:"minimum"`
	Maximum    *float64           `yaml:"maximum"`
}

var loadSpec = sync.OnceValues(func() (*swaggerDoc, error) {
	// A copy of shared/firecracker's description (see testdata/README.md),
	// so the test runs from any checkout.
	p := filepath.Join("testdata", "firecracker-api-v1.16.1.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var doc swaggerDoc
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if doc.Swagger != "2.0" || len(doc.Paths) == 0 || len(doc.Definitions) == 0 {
		return nil, fmt.Errorf("%s: not the Swagger 2.0 document expected", p)
	}
	return &doc, nil
})

func spec(t *testing.T) *swaggerDoc {
	t.Helper()
	doc, err := loadSpec()
	if err != nil {
		t.Fatalf("loading the Firecracker API description: %v", err)
	}
	return doc
}

// matchPath finds the path template that path matches and its parameters.
func (d *swaggerDoc) matchPath(path string) (string, map[string]string, bool) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for tmpl := range d.Paths {
		tsegs := strings.Split(strings.TrimPrefix(tmpl, "/"), "/")
		if len(tsegs) != len(segs) {
			continue
		}
		params := map[string]string{}
		ok := true
		for i, ts := range tsegs {
			if strings.HasPrefix(ts, "{") && strings.HasSuffix(ts, "}") {
				if segs[i] == "" {
					ok = false
					break
				}
				params[ts[1:len(ts)-1]] = segs[i]
			} else if ts != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return tmpl, params, true
		}
	}
	return "", nil, false
}

// validateRequest checks one request against the document.
func (d *swaggerDoc) validateRequest(method, path string, body []byte) error {
	tmpl, params, ok := d.matchPath(path)
	if !ok {
		return fmt.Errorf("%s %s: no such path in the API", method, path)
	}
	op, ok := d.Paths[tmpl][strings.ToLower(method)]
	if !ok {
		return fmt.Errorf("%s %s: path %s has no %s operation", method, path, tmpl, method)
	}
	var bodyParam *parameter
	for i, p := range op.Parameters {
		switch p.In {
		case "body":
			bodyParam = &op.Parameters[i]
		case "path":
			if _, ok := params[p.Name]; !ok && p.Required {
				return fmt.Errorf("%s %s: missing path parameter %s", method, path, p.Name)
			}
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if bodyParam != nil && bodyParam.Required {
			return fmt.Errorf("%s %s: body required", method, path)
		}
		return nil
	}
	if bodyParam == nil {
		return fmt.Errorf("%s %s: the operation takes no body", method, path)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("%s %s: body is not JSON: %v", method, path, err)
	}
	if err := d.validate(v, bodyParam.Schema, "body"); err != nil {
		return fmt.Errorf("%s %s: %v", method, path, err)
	}
	// Firecracker also insists that an id in the path is the one in the body.
	if obj, ok := v.(map[string]any); ok {
		for name, val := range params {
			if bv, ok := obj[name]; ok && bv != val {
				return fmt.Errorf("%s %s: body %s %v differs from the path's %q", method, path, name, bv, val)
			}
		}
	}
	return nil
}

func (d *swaggerDoc) resolve(s *schema) (*schema, string, error) {
	name := ""
	for s != nil && s.Ref != "" {
		n, ok := strings.CutPrefix(s.Ref, "#/definitions/")
		if !ok {
			return nil, "", fmt.Errorf("unsupported $ref %q", s.Ref)
		}
		def, ok := d.Definitions[n]
		if !ok {
			return nil, "", fmt.Errorf("$ref to unknown definition %q", n)
		}
		s, name = def, n
	}
	if s == nil {
		return nil, "", fmt.Errorf("no schema")
	}
	return s, name, nil
}

// validate checks value v (decoded with UseNumber) against s.
func (d *swaggerDoc) validate(v any, s *schema, at string) error {
	s, name, err := d.resolve(s)
	if err != nil {
		return fmt.Errorf("%s: %v", at, err)
	}
	if name != "" {
		at += " (" + name + ")"
	}
	switch s.Type {
	case "object", "":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, have %s", at, jsonKind(v))
		}
		for _, r := range s.Required {
			if _, ok := obj[r]; !ok {
				return fmt.Errorf("%s: required property %q missing", at, r)
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, ok := s.Properties[k]
			if !ok {
				return fmt.Errorf("%s: unknown property %q", at, k)
			}
			if err := d.validate(obj[k], ps, at+"."+k); err != nil {
				return err
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array, have %s", at, jsonKind(v))
		}
		for i, e := range arr {
			if err := d.validate(e, s.Items, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: want a string, have %s", at, jsonKind(v))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want a boolean, have %s", at, jsonKind(v))
		}
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%s: want an integer, have %s", at, jsonKind(v))
		}
		i, err := n.Int64()
		if err != nil {
			return fmt.Errorf("%s: want an integer, have %s", at, n)
		}
		if s.Minimum != nil && float64(i) < *s.Minimum {
			return fmt.Errorf("%s: %d is below the minimum %v", at, i, *s.Minimum)
		}
		if s.Maximum != nil && float64(i) > *s.Maximum {
			return fmt.Errorf("%s: %d is above the maximum %v", at, i, *s.Maximum)
		}
	default:
		return fmt.Errorf("%s: schema type %q not supported by this validator", at, s.Type)
	}
	if len(s.Enum) > 0 {
		for _, e := range s.Enum {
			if fmt.Sprint(e) == fmt.Sprint(v) {
				return nil
			}
		}
		return fmt.Errorf("%s: %v is not one of %v", at, v, s.Enum)
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// validateDefinition checks a value against a named definition (for answers).
func (d *swaggerDoc) validateDefinition(name string, body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	return d.validate(v, &schema{Ref: "#/definitions/" + name}, "answer")
}

func TestSpecValidatorRejects(t *testing.T) {
	doc := spec(t)
	good := `{"drive_id":"rootfs","path_on_host":"/x","is_root_device":false,"is_read_only":true}`
	if err := doc.validateRequest("PUT", "/drives/rootfs", []byte(good)); err != nil {
		t.Fatalf("a valid drive was rejected: %v", err)
	}
	for _, c := range []struct{ name, method, path, body, want string }{
		{"wrong type", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/x","is_root_device":"no"}`, "want a boolean"},
		{"unknown field", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/x","is_root_device":false,"readonly":true}`, `unknown property "readonly"`},
		{"missing required", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/x"}`, `required property "is_root_device" missing`},
		{"id mismatch", "PUT", "/drives/rootfs", `{"drive_id":"rw","is_root_device":false}`, "differs from the path"},
		{"integer as string", "PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":512}`, "want an integer"},
		{"fraction", "PUT", "/machine-config", `{"vcpu_count":1.5,"mem_size_mib":512}`, "want an integer"},
		{"above maximum", "PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":512}`, "above the maximum"},
		{"below minimum", "PUT", "/vsock", `{"guest_cid":2,"uds_path":"v.sock"}`, "below the minimum"},
		{"enum", "PUT", "/actions", `{"action_type":"Reboot"}`, "is not one of"},
		{"nested ref", "PUT", "/drives/rw", `{"drive_id":"rw","is_root_device":false,"rate_limiter":{"bandwidth":{"size":"big","refill_time":1}}}`, "TokenBucket"},
		{"not an object", "PUT", "/boot-source", `["vmlinux"]`, "want an object"},
		{"unknown path", "PUT", "/reboot", `{}`, "no such path"},
		{"wrong method", "POST", "/vsock", `{}`, "no POST operation"},
		{"missing body", "PUT", "/actions", ``, "body required"},
		{"vm state", "PATCH", "/vm", `{"state":"Running"}`, "is not one of"},
		{"vm by PUT", "PUT", "/vm", `{"state":"Paused"}`, "no PUT operation"},
		{"snapshot without memory", "PUT", "/snapshot/create", `{"snapshot_path":"/s"}`, `required property "mem_file_path" missing`},
		{"snapshot type", "PUT", "/snapshot/create", `{"snapshot_path":"/s","mem_file_path":"/m","snapshot_type":"full"}`, "is not one of"},
		{"load backend", "PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"file","backend_path":"/m"}}`, "is not one of"},
		{"load override", "PUT", "/snapshot/load", `{"snapshot_path":"/s","network_overrides":[{"iface_id":"eth0"}]}`, `required property "host_dev_name" missing`},
		{"load unknown", "PUT", "/snapshot/load", `{"snapshot_path":"/s","resume":true}`, `unknown property "resume"`},
	} {
		err := doc.validateRequest(c.method, c.path, []byte(c.body))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
