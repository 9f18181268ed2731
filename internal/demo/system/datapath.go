package system

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/misaki-io/misaki/internal/demo/vehicle"
)

// dataPath is step 3. kwok runs no containers, so the apps run as local
// processes: car-lo's uploader calls inference.apps.svc.cluster.local,
// resolved by its edge proxy's DNS; the proxy routes it by the Route the
// agent applied (from the controller, over xDS) to the gateway, with the
// vehicle's own certificate; the gateway sends it to Service inference in
// misaki-v-car-lo, which is the inference process.
func (d *run) dataPath(ctx context.Context) error {
	d.con.printf("\n== step 3: car-lo's uploader calls inference by its cluster name; the mesh takes the call to the cloud ==\n")
	host := "inference." + appNS + ".svc.cluster.local"
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()

	var routeName string
	err := poll(ctx, d.cfg.Timeout, d.edgeProc, func() error {
		var v struct {
			Routes []struct {
				Name   string `json:"name"`
				Usable bool   `json:"usable"`
				Reason string `json:"reason"`
			} `json:"routes"`
		}
		if err := getJSON(ctx, client, "http://"+d.edge.admin+"/v1/routes", &v); err != nil {
			return err
		}
		for _, r := range v.Routes {
			if strings.Contains(r.Name, "misaki-cloud-inference") {
				if !r.Usable {
					return fmt.Errorf("route %s not usable: %s", r.Name, r.Reason)
				}
				routeName = r.Name
				return nil
			}
		}
		return fmt.Errorf("the proxy has no route for %s yet (%d routes)", host, len(v.Routes))
	})
	d.chk.add("car-lo's edge proxy got the Route from the controller over xDS", err == nil, firstErr(err, "route "+routeName+", usable"))
	if err != nil {
		return err
	}

	stats := filepath.Join(d.dir, loVehicle, "uploader-stats.json")
	app, err := d.startProc("uploader-"+loVehicle, "", nil, d.cfg.Self, "app",
		"--proxy", d.edge.mesh, "--dns", d.edge.dns, "--host", host, "--path", "/v1/frames", "--name", loVehicle,
		"--rate", "10", "--duration", "3s", "--stats-file", stats)
	if err != nil {
		return err
	}
	d.con.say("car-lo's uploader sends 10 frames a second for 3s to http://%s/v1/frames, resolving the name through its proxy's DNS (log %s)", host, app.Log)
	select {
	case <-app.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d.cfg.Timeout):
		return fmt.Errorf("the uploader did not finish in %v; see %s", d.cfg.Timeout, app.Log)
	}
	st, err := vehicle.ReadStats(stats)
	if err != nil || !st.Done {
		return fmt.Errorf("the uploader left no final stats (%v); see %s", err, app.Log)
	}
	var inf InferenceStats
	if err := getJSON(ctx, client, "http://"+d.infAddr+"/stats", &inf); err != nil {
		return err
	}
	ok := st.Sent > 0 && st.Direct == st.Sent && st.Lost == 0 && st.Failed == 0 && st.Bad == 0 && inf.Unique == st.Sent
	d.chk.add("car-lo's uploader reached inference by its cluster DNS name through the edge proxy and the gateway", ok,
		fmt.Sprintf("sent %d, answered %d (direct), lost %d, failed %d; inference got %d", st.Sent, st.Direct, st.Lost, st.Failed, inf.Unique))

	id := "spiffe://misaki/vehicle/" + loVehicle
	if d.gateway.VehicleServices {
		dialled := fmt.Sprintf("inference.misaki-v-%s.svc.cluster.local:%s", loVehicle, portOf(d.infAddr))
		ok := inf.Received > 0 && inf.VehicleIDs[id] == inf.Received && inf.OriginNamespaces[appNS] == inf.Received && inf.Hosts[dialled] == inf.Received
		d.chk.add("the gateway sent every call to car-lo's own cloud namespace", ok,
			fmt.Sprintf("identity %v, origin namespace %v, dialled %v", keys(inf.VehicleIDs), keys(inf.OriginNamespaces), keys(inf.Hosts)))
	} else {
		ok := inf.Received > 0 && inf.VehicleIDs[id] == inf.Received
		d.chk.add("the gateway knew car-lo by its certificate (static route: no private /etc/hosts here)", ok,
			fmt.Sprintf("identity %v", keys(inf.VehicleIDs)))
	}
	return nil
}

func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func portOf(addr string) string {
	_, p, _ := strings.Cut(addr, ":")
	return p
}

// keys lists a count map as "k×n".
func keys(m map[string]int64) string {
	var s []string
	for k, n := range m {
		if k == "" {
			k = `""`
		}
		s = append(s, fmt.Sprintf("%s×%d", k, n))
	}
	return strings.Join(s, " ")
}
