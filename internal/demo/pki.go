package demo

import "github.com/misaki-io/misaki/internal/devpki"

// writePKI writes a throwaway fleet CA, the gateway's certificate for
// 127.0.0.1 and the demo car's client certificate into dir, and sets their
// paths in a.
func writePKI(dir string, a *Addrs) error {
	f, err := devpki.Write(dir, "demo-car-1")
	if err != nil {
		return err
	}
	a.CA, a.GatewayCert, a.GatewayKey, a.VehicleCert, a.VehicleKey = f.CA, f.ServerCert, f.ServerKey, f.ClientCert, f.ClientKey
	return nil
}
