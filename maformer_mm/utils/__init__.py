from .checkpoint import backbone_state_dict, load_backbone_checkpoint, load_backbone_state_dict

__all__ = ['backbone_state_dict', 'load_backbone_checkpoint', 'load_backbone_state_dict']
