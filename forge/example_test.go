package forge_test

import (
	"errors"
	"fmt"

	"github.com/uuidforge/uuidforge/forge"
)

func ExampleNew() {
	users, err := forge.New("users")
	if err != nil {
		panic(err)
	}
	id, err := users.ID("john@example.com")
	if err != nil {
		panic(err)
	}
	fmt.Println(id)
	// Output: 18f0fded-a579-526d-87df-487a8a60c334
}

func ExampleGenerator_ID_parts() {
	invoices := forge.MustNew("invoices")
	id, _ := invoices.ID("EUR", 12345)
	name, _ := forge.Canonical("EUR", 12345)
	fmt.Printf("%s\n%s\n", name, id)
	// Output:
	// ["EUR",12345]
	// 6c7bc462-4987-5526-bfae-9c4efe86ec53
}

func ExampleGenerator_ID_struct() {
	type Order struct {
		SKU string `json:"sku"`
		Qty int    `json:"qty"`
	}
	orders := forge.MustNew("orders")
	a, _ := orders.ID(Order{SKU: "A", Qty: 2})
	b, _ := orders.ID(map[string]any{"qty": 2, "sku": "A"})
	name, _ := forge.Canonical(Order{SKU: "A", Qty: 2})
	fmt.Printf("%s\n%s\n%v\n", name, a, a == b)
	// Output:
	// [{"qty":2,"sku":"A"}]
	// bcdc91de-6e8b-53e5-82dd-36f3d91b8ff0
	// true
}

func ExampleWithSecret() {
	// A real secret comes from forge.NewSecret (forge new-secret) through
	// the environment; the keyed scheme refuses one shorter than 16 bytes.
	users := forge.MustNew("mycompany.com", forge.WithSecret("example-secret-do-not-use"))
	id, _ := users.ID("john@example.com")
	fmt.Println(id, users.Scheme(), int(id.Version()))
	fmt.Println(users) // the secret never appears, only its fingerprint
	_, err := forge.New("mycompany.com", forge.WithSecret("s3cr3t"))
	fmt.Println(errors.Is(err, forge.ErrWeakSecret))
	// Output:
	// 4eec223f-c92c-8d5c-a0d8-8a800e129900 keyed 8
	// forge.Generator{namespace: cf04bb62-eed1-589c-9900-ac86662dd66f, scheme: keyed, secret: 5586f46480e1cdae}
	// true
}

func ExampleCheckSecret() {
	// The python scheme accepts a short salt, as the Python library does,
	// but a short salt can be recovered from one ID: check it.
	py := forge.MustNew("mycompany.com", forge.WithScheme(forge.SchemePython), forge.WithSecret("s3cr3t"))
	fmt.Println(py.CheckSecret())
	fmt.Println(forge.CheckSecret("example-secret-do-not-use"))
	// Output:
	// forge: secret shorter than 16 bytes; make one with NewSecret (forge new-secret)
	// <nil>
}

func ExamplePrefix() {
	invoices := forge.MustNew("invoices")
	id := invoices.MustID("EUR", 12345)
	p := forge.Prefix("INV-EUR", "-", id)
	back, err := forge.Extract(p, "-")
	fmt.Println(p)
	fmt.Println(back == id, err)
	_, err = forge.Extract("INV-garbage", "-")
	fmt.Println(err)
	// Output:
	// INV-EUR-6c7bc462-4987-5526-bfae-9c4efe86ec53
	// true <nil>
	// forge: extract UUID from "INV-garbage" (separator "-"): no valid UUID found
}

func ExampleGenerator_PythonID() {
	// uuid-forge (Python): generate_uuid_only("invoice", config=IDConfig(
	//     Namespace("mycompany.com"), salt="s3cr3t"), region="EUR", number=12345)
	py := forge.MustNew("mycompany.com", forge.WithScheme(forge.SchemePython), forge.WithSecret("s3cr3t"))
	id, _ := py.PythonID("invoice", nil, map[string]any{"region": "EUR", "number": 12345})
	same, _ := py.ID("invoice", forge.Kwargs{"region": "EUR", "number": 12345})
	fmt.Println(id, id == same)
	// Output: e26b5311-223f-5793-9890-bdefaa567c56 true
}
