package certsecret

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
)

// DecodeCerts returns the certificates of b's CERTIFICATE blocks, in
// order; blocks of other types, and certificates that do not parse, are
// skipped.
func DecodeCerts(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// EncodeCerts is cs as CERTIFICATE blocks.
func EncodeCerts(cs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range cs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// DecodeKey returns the PKCS #8 signing key in b's first PEM block, or nil
// if there is none.
func DecodeKey(b []byte) crypto.Signer {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil
	}
	return parseKey(blk)
}

// DecodeKeys returns one entry per PEM block of b, nil where a block is
// not a PKCS #8 signing key, so that indexes stay aligned with a bundle's.
func DecodeKeys(b []byte) []crypto.Signer {
	var out []crypto.Signer
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return out
		}
		out = append(out, parseKey(blk))
	}
}

func parseKey(blk *pem.Block) crypto.Signer {
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil
	}
	s, _ := k.(crypto.Signer)
	return s
}

// EncodeKey is k as a PKCS #8 PRIVATE KEY block. It panics if k does not
// marshal, which an ECDSA, RSA or Ed25519 key always does.
func EncodeKey(k crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// EncodeKeys is ks as PRIVATE KEY blocks, in order.
func EncodeKeys(ks []crypto.Signer) []byte {
	var b []byte
	for _, k := range ks {
		b = append(b, EncodeKey(k)...)
	}
	return b
}
