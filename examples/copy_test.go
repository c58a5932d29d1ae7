// Package examples_test checks what CONTRIBUTING.md promises of the
// programs in this directory: each uses only public API and builds when
// copied into a module of its own.
package examples_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCopiedExamplesBuild copies the non-test .go files of every example
// into a fresh module that requires only github.com/uuidforge/uuidforge
// (replaced by this checkout), lets go mod tidy resolve the rest, and builds
// it. An example that imports an internal package, or a package of this
// repository that is not in the module, fails here.
func TestCopiedExamplesBuild(t *testing.T) {
	goTool := lookGo(t)
	root := repoRoot(t)
	examples, err := exampleDirs(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(examples) == 0 {
		t.Fatal("no example found")
	}
	for _, dir := range examples {
		t.Run(dir, func(t *testing.T) {
			if out, err := buildCopy(goTool, root, dir, t.TempDir()); err != nil {
				t.Errorf("examples/%s does not build as a copied program: %v\n%s", dir, err, out)
			}
		})
	}
}

// TestCopiedBuildRejectsInternal checks the check: a program that imports
// an internal package of the module does not build as a copy.
func TestCopiedBuildRejectsInternal(t *testing.T) {
	goTool := lookGo(t)
	root := repoRoot(t)
	src := t.TempDir()
	prog := `package main

import "github.com/uuidforge/uuidforge/internal/testenv"

func main() { println(testenv.DefaultAMQPURL) }
`
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := buildCopy(goTool, root, src, t.TempDir())
	if err == nil {
		t.Fatalf("a program importing internal/testenv built as a copy:\n%s", out)
	}
	if !strings.Contains(out, "use of internal package") {
		t.Errorf("the build failed for another reason than the internal import: %v\n%s", err, out)
	}
}

func lookGo(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the copies: %v", err)
	}
	return p
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// exampleDirs returns the directories under dir that hold a Go program.
func exampleDirs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		files, err := sources(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if len(files) > 0 {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// sources returns the non-test .go files of dir.
func sources(dir string) ([]string, error) {
	all, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range all {
		if !strings.HasSuffix(f, "_test.go") {
			out = append(out, f)
		}
	}
	return out, nil
}

var goDirective = regexp.MustCompile(`(?m)^go (\S+)\s*$`)

// buildCopy copies the non-test .go files of src into work with a go.mod of
// its own, runs go mod tidy and go build there, and returns their output.
func buildCopy(goTool, root, src, work string) (string, error) {
	files, err := sources(src)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("no non-test .go file in %s", src)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(work, filepath.Base(f)), b, 0o644); err != nil {
			return "", err
		}
	}
	rootMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", err
	}
	m := goDirective.FindSubmatch(rootMod)
	if m == nil {
		return "", fmt.Errorf("no go directive in %s/go.mod", root)
	}
	mod := fmt.Sprintf("module example.com/copied\n\ngo %s\n\nrequire github.com/uuidforge/uuidforge v0.0.0\n\nreplace github.com/uuidforge/uuidforge => %s\n", m[1], root)
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte(mod), 0o644); err != nil {
		return "", err
	}
	var log strings.Builder
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-o", os.DevNull, "."}} {
		cmd := exec.Command(goTool, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		fmt.Fprintf(&log, "$ go %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			return log.String(), fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
	}
	return log.String(), nil
}
