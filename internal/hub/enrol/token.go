package enrol

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
)

// Bootstrap tokens have kubeadm's form "<id>.<secret>": TokenIDLen and
// TokenSecretLen characters of [a-z0-9]. The ID is public (it names the
// token in lists and logs); the secret is shown once and only its hash is
// kept.
const (
	TokenIDLen     = 6
	TokenSecretLen = 16
)

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// NewToken makes a bootstrap token from crypto/rand. The secret carries
// 16·log2(36) ≈ 82.7 bits.
func NewToken() (id, secret, token string, err error) {
	if id, err = randomString(TokenIDLen); err != nil {
		return "", "", "", err
	}
	if secret, err = randomString(TokenSecretLen); err != nil {
		return "", "", "", err
	}
	return id, secret, id + "." + secret, nil
}

// randomString draws n characters uniformly from tokenAlphabet (bytes at
// or above 252, the largest multiple of 36 that fits, are drawn again, so
// no character is likelier than another).
func randomString(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("enrol: token: %w", err)
		}
		for _, b := range buf {
			if b < 252 && len(out) < n {
				out = append(out, tokenAlphabet[b%36])
			}
		}
	}
	return string(out), nil
}

// ParseToken splits a bootstrap token into its ID and secret. The error
// wraps ErrInvalidToken and never repeats the token (it holds a secret).
func ParseToken(token string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(token, ".")
	switch {
	case !ok:
		return "", "", fmt.Errorf("%w: want <id>.<secret>, found no '.'", ErrInvalidToken)
	case len(id) != TokenIDLen || !inAlphabet(id):
		return "", "", fmt.Errorf("%w: the ID (before the '.') must be %d characters of [a-z0-9]", ErrInvalidToken, TokenIDLen)
	case len(secret) != TokenSecretLen || !inAlphabet(secret):
		return "", "", fmt.Errorf("%w: the secret (after the '.') must be %d characters of [a-z0-9]", ErrInvalidToken, TokenSecretLen)
	}
	return id, secret, nil
}

func inAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(tokenAlphabet, rune(s[i])) {
			return false
		}
	}
	return true
}

// HashSecret is what the hub stores for a token's secret: SHA-256. A fast
// hash is enough here, unlike for passwords, because the secret is 82 bits
// from crypto/rand, not chosen by a person: a stolen hash cannot be
// reversed by guessing, so a slow KDF would only cost CPU on each
// enrolment.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// SecretMatches compares secret with a stored HashSecret in constant time.
func SecretMatches(hash []byte, secret string) bool {
	return subtle.ConstantTimeCompare(hash, HashSecret(secret)) == 1
}
