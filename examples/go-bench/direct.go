package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// directClient sends the Key Vault sign request itself, through the same proxy to the same
// fake, over kept-alive connections: what the fake can answer with no plugin in the way.
type directClient struct {
	http    *http.Client
	token   string
	signURL string
	body    []byte
}

func newDirect(f *fakeVault, host string) (*directClient, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128
	c := &directClient{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	q := url.Values{"api-version": {"2019-08-01"}, "resource": {"https://vault.azure.net"}}
	req, err := http.NewRequest(http.MethodGet, f.identityEndpoint+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-IDENTITY-HEADER", os.Getenv("IDENTITY_HEADER"))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := c.do(req, &tok); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	c.token = tok.AccessToken
	base := "https://" + host
	var list struct {
		Value []struct {
			Kid string `json:"kid"`
		} `json:"value"`
	}
	if err := c.get(base+"/keys?api-version=7.4", &list); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	// Any P-256 key the plugins created will do.
	for _, k := range list.Value {
		name := k.Kid[strings.LastIndex(k.Kid, "/")+1:]
		var key struct {
			Key struct {
				Kid string `json:"kid"`
				Kty string `json:"kty"`
				Crv string `json:"crv"`
			} `json:"key"`
		}
		if err := c.get(base+"/keys/"+name+"?api-version=7.4", &key); err != nil {
			return nil, fmt.Errorf("get %s: %w", name, err)
		}
		if key.Key.Crv != "P-256" {
			continue
		}
		kid, err := url.Parse(key.Key.Kid)
		if err != nil {
			return nil, err
		}
		c.signURL = base + kid.Path + "/sign?api-version=7.4"
		digest := sha256.Sum256([]byte("go-bench"))
		c.body, _ = json.Marshal(map[string]string{"alg": "ES256", "value": base64.RawURLEncoding.EncodeToString(digest[:])})
		return c, nil
	}
	return nil, fmt.Errorf("no P-256 key in the fake among %d", len(list.Value))
}

func (c *directClient) get(u string, out any) error {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	return c.do(req, out)
}

func (c *directClient) do(req *http.Request, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, body)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

func (c *directClient) sign() error {
	req, err := http.NewRequest(http.MethodPost, c.signURL, bytes.NewReader(c.body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, nil)
}
