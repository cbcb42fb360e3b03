package llmtest

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// obj is a JSON object with its keys in a fixed order. The wire formats are
// built from these rather than structs because which keys are present, and
// whether a value is null or absent, is exactly what the fakes must get
// right (e.g. OpenAI's "usage":null appears only when usage was asked for).
type obj []field

type field struct {
	key string
	val any
}

// marshal encodes v without HTML escaping, as the real APIs do ("<" stays
// "<", not "\u003c").
func marshal(v any) []byte {
	var b bytes.Buffer
	encode(&b, v)
	return b.Bytes()
}

func encode(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case obj:
		b.WriteByte('{')
		for i, f := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			encodeString(b, f.key)
			b.WriteByte(':')
			encode(b, f.val)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			encode(b, e)
		}
		b.WriteByte(']')
	case string:
		encodeString(b, v)
	case int:
		b.WriteString(strconv.Itoa(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case json.RawMessage:
		b.Write(v)
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			panic("llmtest: cannot encode " + err.Error())
		}
		b.Write(raw)
	}
}

func encodeString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a string always encodes
	b.Truncate(b.Len() - 1) // Encode appends a newline
}

// rawJSON embeds text as JSON if it is valid, else as a JSON string, for
// the non-streaming replies where a malformed tool input cannot be sent raw.
func rawJSON(text string) any {
	if json.Valid([]byte(text)) {
		return json.RawMessage(text)
	}
	return text
}
