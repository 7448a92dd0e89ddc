// A container runtime's side of CNI, as containerd and CRI-O do it: the
// network configuration list is loaded and each call goes through libcni
// (Debian's golang-github-appc-cni-dev, built in GOPATH mode by the
// tests). libcni 1.1 has no STATUS and GC (they came in libcni 1.2), so
// the tests exec the plugin for those with the spec's environment.
//
//	driver add|check|del CONFLIST CONTAINERID NETNS IFNAME [CNI_ARGS]
//	driver version CONFLIST PLUGIN
//	driver bench CONFLIST JOBS PARALLEL   (JOBS: lines "CONTAINERID NETNS")
//
// A CNI error is printed on stdout as the spec's error object and the
// driver exits 2; other failures exit 1.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func fail(err error) {
	var e *types.Error
	if errors.As(err, &e) {
		out, _ := json.Marshal(e)
		fmt.Println(string(out))
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func runtimeConf(id, netns, ifname, args string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifname}
	for _, kv := range strings.Split(args, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			rt.Args = append(rt.Args, [2]string{k, v})
		}
	}
	return rt
}

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: driver add|check|del|version|bench CONFLIST ..."))
	}
	list, err := libcni.ConfListFromFile(os.Args[2])
	if err != nil {
		fail(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(os.Getenv("CNI_PATH"), ":"), os.Getenv("CNI_CACHE"), nil)
	ctx := context.Background()
	switch os.Args[1] {
	case "add", "check", "del":
		args := ""
		if len(os.Args) > 6 {
			args = os.Args[6]
		}
		rt := runtimeConf(os.Args[3], os.Args[4], os.Args[5], args)
		switch os.Args[1] {
		case "add":
			res, err := cni.AddNetworkList(ctx, list, rt)
			if err != nil {
				fail(err)
			}
			out, _ := json.Marshal(res)
			fmt.Println(string(out))
		case "check":
			if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
				fail(err)
			}
		case "del":
			if err := cni.DelNetworkList(ctx, list, rt); err != nil {
				fail(err)
			}
		}
	case "version":
		info, err := cni.GetVersionInfo(ctx, os.Args[3])
		if err != nil {
			fail(err)
		}
		out, _ := json.Marshal(info.SupportedVersions())
		fmt.Println(string(out))
	case "bench":
		bench(ctx, cni, list)
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

// bench: ADDs the jobs, PARALLEL at a time; prints each ADD's latency in
// microseconds, then the wall time of all of them.
func bench(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList) {
	f, err := os.Open(os.Args[3])
	if err != nil {
		fail(err)
	}
	var jobs [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p := strings.Fields(sc.Text()); len(p) == 2 {
			jobs = append(jobs, [2]string{p[0], p[1]})
		}
	}
	var parallel int
	fmt.Sscan(os.Args[4], &parallel)
	lat := make([]time.Duration, len(jobs))
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	start := time.Now()
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, j [2]string) {
			defer wg.Done()
			t := time.Now()
			_, errs[i] = cni.AddNetworkList(ctx, list, runtimeConf(j[0], j[1], "eth0", ""))
			lat[i] = time.Since(t)
			<-sem
		}(i, j)
	}
	wg.Wait()
	wall := time.Since(start)
	for i, e := range errs {
		if e != nil {
			fail(fmt.Errorf("ADD %s: %w", jobs[i][0], e))
		}
	}
	for _, l := range lat {
		fmt.Println(l.Microseconds())
	}
	fmt.Printf("wall %d\n", wall.Microseconds())
}
