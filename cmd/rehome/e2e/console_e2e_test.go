package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rehome/rehome/cmd/rehome/devcluster"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/testtool"
)

// chromium finds a Chromium to drive: $REHOME_CHROMIUM, then Debian's.
func chromium() string {
	if p := os.Getenv("REHOME_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// artifactDir is where the test keeps its screenshot: $REHOME_ARTIFACTS
// (make test sets bin/artifacts), else the test's temp dir.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("REHOME_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err == nil {
			return d
		}
	}
	return t.TempDir()
}

// pageView is what the console page shows, read from its DOM.
type pageView struct {
	Racks  map[string][]string `json:"racks"`  // rack -> node ids
	States map[string]string   `json:"states"` // node -> state shown
	Under  string              `json:"under"`
	Bus    string              `json:"bus"`
	// Balance is the rebalancer's state shown (balanced, paused, moving...).
	Balance string `json:"balance"`
}

const readPage = `(() => {
  const v = {racks: {}, states: {}, under: (document.getElementById("under-replicated") || {}).textContent || "",
             bus: (document.getElementById("bus") || {}).textContent || "",
             balance: ((document.querySelector("[data-balance]") || {}).dataset || {}).balance || ""};
  for (const r of document.querySelectorAll(".rack[data-rack]")) {
    v.racks[r.dataset.rack] = [...r.querySelectorAll(".node[data-node]")].map((n) => n.dataset.node);
    for (const n of r.querySelectorAll(".node[data-node]")) v.states[n.dataset.node] = n.querySelector(".state").textContent;
  }
  return JSON.stringify(v);
})()`

// TestConsoleShowsAKilledNodeHealing drives a real Chromium through the
// console of a dev cluster: log in with the operator's credentials, see 6
// nodes on 3 racks, kill -9 one node, and, with no reload, see it down and
// under-replicated return to 0.
func TestConsoleShowsAKilledNodeHealing(t *testing.T) {
	exe := chromium()
	if exe == "" {
		testtool.Missing(t, "no Chromium installed (apt-get install chromium, or set REHOME_CHROMIUM): the console's browser test needs one")
	}
	c := startDev(t, "--nodes", "6", "--racks", "3", "--grace", "2s", "--suspect-after", "1s", "--heartbeat", "250ms")
	waitHealthy(t, c, 6)
	c.putRandom(t, 20, 32<<10)
	consoleURL := c.getenv(devcluster.EnvConsoleURL)
	if consoleURL == "" {
		t.Fatalf("secrets.env has no %s", devcluster.EnvConsoleURL)
	}
	u, err := url.Parse(c.getenv(bus.EnvURL))
	if err != nil || u.User == nil {
		t.Fatalf("secrets.env: %s carries no operator credentials", bus.EnvURL)
	}
	user := u.User.Username()
	pass, _ := u.User.Password()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.Headless,
		chromedp.WindowSize(1400, 1000), chromedp.Flag("disable-gpu", true))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()

	// The login form, with the operator's user and password.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(consoleURL),
		chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.SendKeys(chromedp.ID("user"), user),
		chromedp.SendKeys(chromedp.ID("password"), pass),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("racks")),
	); err != nil {
		t.Fatalf("logging in at %s: %v", consoleURL, err)
	}
	var last pageView
	read := func() error {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](readPage))
		if err != nil {
			return err
		}
		last = pageView{}
		return json.Unmarshal([]byte(s), &last)
	}
	// poll reads the page until ok holds, or fails saying what it last showed.
	poll := func(timeout time.Duration, what string, ok func(pageView) bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			err := read()
			if err == nil && ok(last) {
				return
			}
			if time.Now().After(deadline) || errors.Is(err, context.Canceled) || ctx.Err() != nil {
				t.Fatalf("the page never showed %s within %s; it last showed %+v (read error %v)", what, timeout, last, err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	poll(30*time.Second, "6 nodes up on 3 racks", func(v pageView) bool {
		n := 0
		for _, ids := range v.Racks {
			n += len(ids)
		}
		up := 0
		for _, s := range v.States {
			if s == "up" {
				up++
			}
		}
		return len(v.Racks) == 3 && n == 6 && up == 6
	})

	// The rebalancer's switch shows, and follows an operator's pause.
	if out, err := c.rehome("rebalance", "pause"); err != nil {
		t.Fatalf("rebalance pause: %v\n%s", err, out)
	}
	poll(30*time.Second, "the rebalancer paused", func(v pageView) bool { return v.Balance == "paused" })
	if out, err := c.rehome("rebalance", "resume"); err != nil {
		t.Fatalf("rebalance resume: %v\n%s", err, out)
	}
	poll(30*time.Second, "the rebalancer running again", func(v pageView) bool { return v.Balance != "" && v.Balance != "paused" })

	victim, pid := "storage-2", 0
	for _, p := range c.processes() {
		if p.ID == victim {
			pid = p.PID
		}
	}
	if pid == 0 {
		t.Fatalf("processes.json has no %s", victim)
	}
	t.Logf("killing %s (pid %d)", victim, pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(60*time.Second, victim+" down", func(v pageView) bool { return v.States[victim] == "down" })
	poll(90*time.Second, "under-replicated back to 0 with "+victim+" down", func(v pageView) bool {
		return v.Under == "0" && v.States[victim] == "down"
	})

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactDir(t), "console.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the console: %s (%s)", path, fmt.Sprint(len(png))+" bytes")
}
