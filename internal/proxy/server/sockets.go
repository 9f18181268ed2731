package server

import (
	"fmt"
	"net"
	"strconv"

	"github.com/misaki-io/misaki/internal/proxy/listenfd"
	"github.com/misaki-io/misaki/internal/proxy/localdns"
)

// listenTCP takes the stream socket handed over as name (by the supervisor
// or systemd: Options.Sockets), or else binds addr.
func (s *Server) listenTCP(name, addr string) (net.Listener, error) {
	ln, err := s.sockets.Listener(name)
	if err != nil {
		return nil, err
	}
	if ln == nil {
		return net.Listen("tcp", addr)
	}
	s.checkHanded(name, addr, ln.Addr())
	return ln, nil
}

// listenDNSSockets takes the DNS sockets handed over, or binds addr. When
// only one of the two was handed, the other is bound beside it.
func (s *Server) listenDNSSockets(addr string) (*net.UDPConn, net.Listener, error) {
	pc, err := s.sockets.PacketConn(listenfd.DNS)
	if err != nil {
		return nil, nil, err
	}
	ln, err := s.sockets.Listener(listenfd.DNS)
	if err != nil {
		if pc != nil {
			pc.Close()
		}
		return nil, nil, err
	}
	if pc == nil && ln == nil {
		return localdns.Listen(addr)
	}
	var conn *net.UDPConn
	if pc != nil {
		var ok bool
		if conn, ok = pc.(*net.UDPConn); !ok {
			pc.Close()
			if ln != nil {
				ln.Close()
			}
			return nil, nil, fmt.Errorf("dns: the socket handed over as %q is not UDP", listenfd.DNS)
		}
		s.checkHanded(listenfd.DNS, addr, conn.LocalAddr())
	} else {
		s.checkHanded(listenfd.DNS, addr, ln.Addr())
	}
	switch {
	case ln == nil:
		ln, err = net.Listen("tcp", conn.LocalAddr().String())
	case conn == nil:
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort()))
	}
	if err != nil {
		for _, c := range []interface{ Close() error }{conn, ln} {
			if c != nil {
				c.Close()
			}
		}
		return nil, nil, fmt.Errorf("dns: %w", err)
	}
	return conn, ln, nil
}

// checkHanded warns when a socket handed over is not bound where the
// config says: the config changed since the supervisor bound it, which
// takes a restart of the supervisor.
func (s *Server) checkHanded(name, want string, got net.Addr) {
	host, port, err := net.SplitHostPort(want)
	if err != nil {
		return // Validate has refused it
	}
	var ip net.IP
	var gotPort int
	switch a := got.(type) {
	case *net.TCPAddr:
		ip, gotPort = a.IP, a.Port
	case *net.UDPAddr:
		ip, gotPort = a.IP, a.Port
	default:
		return
	}
	wantIP := net.ParseIP(host)
	if (port == "0" || port == strconv.Itoa(gotPort)) && (wantIP == nil || wantIP.Equal(ip)) {
		return
	}
	s.log.Warn("the socket handed over is not bound where the config says; serving on it (restart the supervisor to move it)",
		"socket", name, "config", want, "bound", got.String())
}

// closeUnusedSockets closes the sockets handed over that the config does
// not use (health or DNS turned off since the supervisor bound them).
func (s *Server) closeUnusedSockets() {
	for _, name := range s.sockets.Close() {
		s.log.Warn("a socket handed over is not in the config; closed", "socket", name)
	}
}
