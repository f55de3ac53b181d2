module github.com/rehome/rehome/deploy/stacktest

go 1.26.0
