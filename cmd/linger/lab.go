package main

import (
	"context"
	"errors"
)

func runLab(ctx context.Context, args []string) error { return errors.New("not yet") }
