//go:build misaki_postgres

package main

// A misaki-proxy built with -tags misaki_postgres has the gateway's shared
// store too; misaki-gateway is the usual way to get it.
import _ "github.com/misaki-io/misaki/internal/gateway/pgstore"
