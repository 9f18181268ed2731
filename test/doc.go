// Package test holds end-to-end tests that run Misaki's real binaries against
// real servers on loopback and in network namespaces the tests create.
package test
