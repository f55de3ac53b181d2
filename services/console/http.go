package console

import (
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"time"
)

//go:embed assets
var assets embed.FS

// cookieName is the session cookie.
const cookieName = "rehome_console"

// maxLoginBody bounds a login form.
const maxLoginBody = 4 << 10

// minGap spaces two state events sent for changes (a burst of events at
// start folds into one).
const minGap = 250 * time.Millisecond

var loginPage = template.Must(template.ParseFS(assets, "assets/login.html"))

// Handler returns the console's routes: the page and its assets, the login
// form, /api/state (JSON) and /api/events (server-sent events). Everything
// but the login form, the assets and /healthz needs a session.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", noList(http.FileServerFS(static))))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /login", c.loginForm)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.logout)
	mux.HandleFunc("GET /{$}", c.page)
	mux.Handle("GET /api/state", c.authed(http.HandlerFunc(c.state)))
	mux.Handle("GET /api/events", c.authed(http.HandlerFunc(c.events)))
	return secureHeaders(mux)
}

// secureHeaders keeps the page from being framed or sniffed, and lets it
// load nothing but its own assets.
func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.ServeHTTP(w, r)
	})
}

// noList answers 404 for directory paths instead of listing them.
func noList(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || r.URL.Path[len(r.URL.Path)-1] == '/' {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loggedIn reports whether r carries a live session (always, on an open page).
func (c *Console) loggedIn(r *http.Request) bool {
	if c.cfg.Open() {
		return true
	}
	ck, err := r.Cookie(cookieName)
	return err == nil && c.sessions.valid(ck.Value)
}

// authed answers 401 to a request without a session.
func (c *Console) authed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.loggedIn(r) {
			w.Header().Set("Cache-Control", "no-store")
			http.Error(w, "log in first (POST /login)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	if !c.loggedIn(r) {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.ServeFileFS(w, r, assets, "assets/index.html")
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	if c.loggedIn(r) {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c.renderLogin(w, http.StatusOK, "")
}

func (c *Console) renderLogin(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = loginPage.Execute(w, struct{ Error string }{msg})
}

// login checks the form's user and password against the operator's
// credentials and, when they match, sets the session cookie.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		c.renderLogin(w, http.StatusBadRequest, "That form could not be read.")
		return
	}
	if c.cfg.Open() {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	user, pass := r.PostForm.Get("user"), r.PostForm.Get("password")
	okUser := sameSecret(user, c.cfg.User)
	okPass := sameSecret(pass, c.cfg.Password)
	if !okUser || !okPass {
		c.log.Warn("console login refused", "user", user, "remote", r.RemoteAddr)
		c.renderLogin(w, http.StatusUnauthorized, "Wrong user or password.")
		return
	}
	tok, err := c.sessions.create()
	if err != nil {
		http.Error(w, "no session: "+err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int(c.cfg.SessionTTL.Seconds())})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(cookieName); err == nil {
		c.sessions.end(ck.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// state answers the current View as JSON.
func (c *Console) state(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(c.View())
}

// events streams the View as `state` events: at once, on every change (at
// most one per minGap) and at least every cfg.Poll, until the client goes.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	tick := time.NewTicker(c.cfg.Poll)
	defer tick.Stop()
	for {
		changed := c.changes()
		b, err := json.Marshal(c.View())
		if err != nil {
			c.log.Error("console: encode the view", "err", err)
			return
		}
		if _, err := w.Write(append(append([]byte("retry: 2000\nevent: state\ndata: "), b...), '\n', '\n')); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
			select {
			case <-ctx.Done():
				return
			case <-time.After(minGap):
			}
		}
	}
}
