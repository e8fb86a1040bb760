"""Jobs: training, evaluation, nowcasting, submission, retraining and the `convlstm` CLI."""
