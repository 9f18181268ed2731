package codec

import hubv1 "github.com/misaki-io/misaki/api/hub/v1"

// sourceSpec is the part of a chart source kept as JSON.
type sourceSpec struct {
	Charts                []string `json:"charts"`
	CAFile                string   `json:"caFile"`
	InsecureSkipTLSVerify bool     `json:"insecureSkipTLSVerify"`
	PlainHTTP             bool     `json:"plainHTTP"`
}

// SourceSpec is src's spec column: what a chart_sources row keeps as JSON
// beside its name, type, URL and creation time.
func SourceSpec(src hubv1.ChartSource) (string, error) {
	return Encode(sourceSpec{src.Charts, src.CAFile, src.InsecureSkipTLSVerify, src.PlainHTTP})
}

// DecodeSourceSpec sets the fields of src that SourceSpec keeps in spec.
func DecodeSourceSpec(spec string, src *hubv1.ChartSource) error {
	var sp sourceSpec
	if err := Decode(spec, &sp); err != nil {
		return err
	}
	src.Charts, src.CAFile, src.InsecureSkipTLSVerify, src.PlainHTTP = sp.Charts, sp.CAFile, sp.InsecureSkipTLSVerify, sp.PlainHTTP
	return nil
}
